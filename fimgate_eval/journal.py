"""A journal of an eval's completions, one JSON line each, written as they come: a full run
takes hours on a small machine, and one that stops (a reboot, Ctrl-C) resumes from it
instead of starting over. Each line holds a completion, not its score, so a resumed run
scores every record with the same code."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fimgate_eval.runner import Completion


class Journal:
    """The completions made so far, by (set, record name); kept in ``path`` when there is one."""

    def __init__(self, path: Path | None, model: str, resume: bool) -> None:
        self.path = path
        self.model = model
        self.made: dict[tuple[str, str], Completion] = {}
        self._seconds_before = 0.0  # what the runs it resumes took
        self._started = time.monotonic()
        if path and resume:
            self._load(path)
        elif path:
            path.unlink(missing_ok=True)

    def seconds(self) -> float:
        """The run's time so far, the runs it resumes included."""
        return self._seconds_before + time.monotonic() - self._started

    def add(self, set_name: str, name: str, completion: Completion) -> None:
        self.made[set_name, name] = completion
        if not self.path:
            return
        entry = {
            "model": self.model, "set": set_name, "name": name, "output": completion.text,
            "tokens": completion.tokens, "seconds": round(self.seconds(), 1),
        }  # fmt: skip
        if completion.seconds is not None:
            entry["took"] = round(completion.seconds, 3)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def _load(self, path: Path) -> None:
        """A journal of another model is refused rather than mixed in."""
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8")
        whole = text[: text.rfind("\n") + 1]
        if whole != text:  # a run stopped mid-line: cut that line, or the next would join it
            path.write_text(whole, encoding="utf-8")
        for line in whole.splitlines():
            entry: dict[str, Any] = json.loads(line)
            if entry["model"] != self.model:
                model = entry["model"]
                raise ValueError(f"{path} holds completions of {model}, not {self.model}")
            self.made[entry["set"], entry["name"]] = Completion(
                entry["output"], entry["tokens"], entry.get("took")
            )
            self._seconds_before = max(self._seconds_before, entry["seconds"])
