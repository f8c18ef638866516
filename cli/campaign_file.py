"""A campaign described in one YAML file, for `drip campaign create FILE.yaml`:

```yaml
name: Onboarding
from_email: hello@example.com     # optional, like from_name and reply_to
activate: true                    # optional: start it right away (default: stays a draft)
templates:                        # a name each, used by the steps below
  welcome:
    html: "<p>Hi {{ first_name | default('there') }}</p>"
    text: "Hi!"                   # optional
  reminder:
    html_file: reminder.html      # or from a file, relative to this one
steps:
  - subject: Welcome aboard
    delay_hours: 0
    template: welcome
  - subject: Still interested?
    delay_hours: 48
    template: reminder
    condition: {type: not_opened, step_order: 1}   # on an earlier step, by its position
    alternative: {subject: Glad you're here, template: welcome}
```

Only the file's shape is checked here (names a human wrote, clear messages); the API validates
the rest and names the offending field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CAMPAIGN_KEYS = {"name", "from_email", "from_name", "reply_to", "activate", "templates", "steps"}


class CampaignFileError(ValueError):
    pass


@dataclass
class CampaignFile:
    campaign: dict[str, Any]  # the body of POST /api/campaigns, steps naming templates by key
    templates: dict[str, dict[str, Any]]  # key -> body of POST /api/templates
    activate: bool = False

    def campaign_body(self, template_ids: dict[str, int]) -> dict[str, Any]:
        """The campaign body with every template key replaced by its id."""
        body = dict(self.campaign)
        steps = [dict(step) for step in body.get("steps", [])]
        for step in steps:
            step["template_id"] = template_ids[str(step.pop("template"))]
            if isinstance(step.get("alternative"), dict):
                alternative = dict(step["alternative"])
                alternative["template_id"] = template_ids[str(alternative.pop("template"))]
                step["alternative"] = alternative
        body["steps"] = steps
        return body


def load(path: Path) -> CampaignFile:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CampaignFileError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CampaignFileError(f"{path}: expected a mapping with name, templates and steps")
    unknown = set(data) - CAMPAIGN_KEYS
    if unknown:
        raise CampaignFileError(f"{path}: unknown keys {sorted(unknown)}")
    if not data.get("name"):
        raise CampaignFileError(f"{path}: `name` is required")
    templates = _templates(path, data.get("templates") or {})
    steps = data.get("steps") or []
    if not isinstance(steps, list):
        raise CampaignFileError(f"{path}: `steps` must be a list")
    for number, step in enumerate(steps, start=1):
        if not isinstance(step, dict):
            raise CampaignFileError(f"{path}: step {number} must be a mapping")
        _check_ref(path, templates, number, "template", step.get("template"))
        if isinstance(step.get("alternative"), dict):
            _check_ref(
                path, templates, number, "alternative.template", step["alternative"].get("template")
            )
    campaign = {k: v for k, v in data.items() if k not in ("activate", "templates")}
    return CampaignFile(campaign=campaign, templates=templates, activate=bool(data.get("activate")))


def _templates(path: Path, raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise CampaignFileError(f"{path}: `templates` must map a name to html (and text)")
    templates = {}
    for key, spec in raw.items():
        if not isinstance(spec, dict):
            raise CampaignFileError(f"{path}: template {key!r} must be a mapping")
        body = {"name": str(spec.get("name", key))}
        for part in ("html", "text"):
            if f"{part}_file" in spec:
                source = path.parent / str(spec[f"{part}_file"])
                try:
                    body[part] = source.read_text(encoding="utf-8")
                except OSError as exc:
                    raise CampaignFileError(f"{path}: template {key!r}: {exc}") from exc
            elif part in spec:
                body[part] = spec[part]
        if "html" not in body:
            raise CampaignFileError(f"{path}: template {key!r} needs html or html_file")
        templates[str(key)] = body
    return templates


def _check_ref(path: Path, templates: dict[str, Any], step: int, where: str, key: Any) -> None:
    if key is None:
        raise CampaignFileError(f"{path}: step {step} needs `{where}` (a template name)")
    if str(key) not in templates:
        raise CampaignFileError(
            f"{path}: step {step} {where} {key!r} is not one of the templates {sorted(templates)}"
        )
