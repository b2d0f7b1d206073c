"""{{ name }}: the pure logic, free of the WIT bindings (they exist only
inside componentize-py's build), so `python3 -m unittest` tests it on any
Python without building."""

# What the plugin uses when its config does not say (or `config` is denied).
DEFAULTS = {
    "keywords": "urgent, asap",
    "tag": "Urgent",
}


def settings_from(pairs):
    """The plugin's settings: `DEFAULTS` overridden by the config pairs."""
    merged = dict(DEFAULTS)
    merged.update({k: v for k, v in pairs if k in DEFAULTS})
    return merged


def matching_keywords(subject, body, settings):
    """The configured keywords found in the subject or body (any case)."""
    text = f"{subject}\n{body or ''}".lower()
    keywords = [k.strip().lower() for k in settings["keywords"].split(",")]
    return [k for k in keywords if k and k in text]
