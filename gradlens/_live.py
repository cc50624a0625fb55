"""What a watched loop shows while it runs: a rich live view on a terminal, compact lines in
logs and pipes, or nothing. The only part of ``watch`` that prints."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .records import Diagnostic, WatchRecord
from .render.watch_view import compact_line, live_view

__all__ = ["LINE_EVERY", "REFRESH_SECONDS", "LiveOutput"]

#: Seconds between two refreshes of the live view (each one copies statistics to the host).
REFRESH_SECONDS = 0.5
#: Steps between two compact lines when the output is not a terminal.
LINE_EVERY = 100


class LiveOutput:
    """``live=True``: rich live view; ``False``: silent; ``None``: live view on a terminal,
    else a compact line every ``LINE_EVERY`` steps and each finding as it appears."""

    def __init__(self, live: bool | None, console: Console | None = None) -> None:
        self._console = console
        self._mode = "off" if live is False else ("live" if live else "auto")
        self._live: Live | None = None
        self._last = 0.0
        self._next_line = LINE_EVERY
        self._printed = 0  # diagnostics already printed as lines

    def start(self, record: WatchRecord) -> None:
        """Starts showing ``record`` (the live view, or nothing until the first line)."""
        if self._mode == "off":
            return
        console = self._console or Console()
        self._console = console
        if self._mode == "auto":
            self._mode = "live" if console.is_terminal else "lines"
        if self._mode == "live":
            self._live = Live(live_view(record), console=console, auto_refresh=False)
            self._live.start(refresh=True)
        self._last = time.monotonic()

    def due(self, steps_seen: int) -> bool:
        """Returns whether the next update should happen now (cheap: no host copy)."""
        if self._mode == "live":
            return time.monotonic() - self._last >= REFRESH_SECONDS
        return self._mode == "lines" and steps_seen >= self._next_line

    def update(self, record: WatchRecord) -> None:
        """Shows ``record``: refreshes the live view, or prints new findings and a line."""
        self._last = time.monotonic()
        if self._live is not None:
            self._live.update(live_view(record), refresh=True)
        elif self._mode == "lines":
            self._print_new(record.diagnostics)
            if record.total_steps >= self._next_line:
                self._print(Text(compact_line(record)))
                while self._next_line <= record.total_steps:
                    self._next_line += LINE_EVERY

    def stop(self, record: WatchRecord) -> None:
        """Shows the final state and stops the live view."""
        if self._live is not None:
            live, self._live = self._live, None
            live.update(live_view(record), refresh=True)
            live.stop()
        elif self._mode == "lines":
            self._print_new(record.diagnostics)
            self._print(Text(compact_line(record)))

    def _print_new(self, diagnostics: tuple[Diagnostic, ...]) -> None:
        for d in diagnostics[self._printed :]:
            where = f" ({d.source})" if d.source else ""
            self._print(Text(f"gradlens {d.severity.value}: [{d.kind}] {d.message}{where}"))
        self._printed = len(diagnostics)

    def _print(self, text: Text) -> None:
        assert self._console is not None
        self._console.print(text, highlight=False, soft_wrap=True)
