"""The side panel with the model's todo list, updated live."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

MARKS = {"pending": ("☐", ""), "in_progress": ("◐", "bold yellow"),
         "completed": ("☑", "green")}


class PlanPanel(Static):
    """The plan as the model last wrote it (with the `todo` tool), and whether plan mode is on."""

    items: reactive[list[dict[str, Any]]] = reactive(list, always_update=True)
    plan_mode: reactive[bool] = reactive(False)

    def render(self) -> Text:
        text = Text()
        title = "Plan mode · read-only" if self.plan_mode else "Plan"
        text.append(title + "\n\n", style="bold")
        if not self.items:
            text.append("No plan yet.", style="dim italic")
            if self.plan_mode:
                text.append("\nThe agent investigates and proposes one for you to approve.",
                            style="dim italic")
            return text
        done = sum(1 for i in self.items if i.get("status") == "completed")
        for item in self.items:
            mark, style = MARKS.get(str(item.get("status")), MARKS["pending"])
            text.append(f"{mark} ", style=style)
            text.append(str(item.get("content", "")) + "\n",
                        style="dim strike" if item.get("status") == "completed" else style)
        text.append(f"\n{done}/{len(self.items)} done", style="dim")
        return text
