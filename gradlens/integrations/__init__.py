"""Training frameworks' callbacks: ``gradlens.integrations.lightning.GradlensCallback`` (Lightning)
and ``gradlens.integrations.transformers.GradlensCallback`` (Hugging Face ``Trainer``).

Each imports its framework only when imported itself: ``pip install 'gradlens[lightning]'`` or
``'gradlens[transformers]'``.
"""
