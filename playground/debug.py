"""What Django's error reports (the DEBUG page, mailed reports) may show: no secret.

Installed as `DEFAULT_EXCEPTION_REPORTER_FILTER`. Beyond Django's own filter it hides
- settings, request.META entries, form fields and frame locals whose name says secret (api_key,
  key, authorization, cookie, password, token, secret), and the addresses of
  services (REDIS_URL, DATABASE_URL, a cache's LOCATION, a channel layer's hosts);
- in any other value shown: the user:password part of a URL, any `Bearer …` value,
  and the text of every live `keys.Secret` (a revealed copy in a header dict, say);
  a `Secret` itself shows only its mask.
"""

import re
from pprint import pformat

from django.views.debug import SafeExceptionReporterFilter

from playground.keys import Secret

CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s\"']*@", re.IGNORECASE)
BEARER = re.compile(r"(Bearer\s+)[^\s\"'\\,;]+", re.IGNORECASE)
NAMED_SECRET = re.compile(
    r"API|AUTH|KEY|TOKEN|SECRET|PASS|SIGNATURE|COOKIE|CREDENTIAL"
    r"|_URL$|^LOCATION$|^ADDRESS$|^HOSTS$",
    re.IGNORECASE,
)
# Names of frame locals whose values are hidden whole (a Secret still shows its mask).
SECRET_LOCAL = re.compile(r"API|KEY|TOKEN|SECRET|PASS|COOKIE|AUTHORIZATION|CREDENTIAL", re.IGNORECASE)
# Setting names ending in _URL that name a page of this site, not a service.
SITE_URLS = frozenset(
    {"STATIC_URL", "MEDIA_URL", "LOGIN_URL", "LOGOUT_URL", "LOGIN_REDIRECT_URL", "LOGOUT_REDIRECT_URL"}
)


class Shown:
    """A value already made safe: the debug page's pprint shows this text as it is."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def cleanse_text(text: str) -> str:
    """Text without URL credentials, bearer values or the text of a live Secret."""
    text = CREDENTIALS.sub(r"\g<scheme>********@", text)
    text = BEARER.sub(r"\1********", text)
    for secret in list(Secret.live):
        value = secret.reveal()
        if value and value in text:
            text = text.replace(value, repr(secret))
    return text


class SafeReporterFilter(SafeExceptionReporterFilter):
    hidden_settings = NAMED_SECRET

    def is_active(self, request) -> bool:
        """Filter with DEBUG on as well (Django's filter lets everything through then)."""
        return True

    def get_post_parameters(self, request):
        """Django's, and form fields whose name says secret (an admin's `api_key`) hidden."""
        shown = super().get_post_parameters(request)
        if not any(isinstance(name, str) and SECRET_LOCAL.search(name) for name in shown):
            return shown
        shown = shown.copy()
        for name in shown:
            if isinstance(name, str) and SECRET_LOCAL.search(name):
                shown[name] = self.cleansed_substitute
        return shown

    def cleanse_setting(self, key, value):
        if isinstance(key, str) and key.upper() in SITE_URLS:
            return value
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return cleanse_text(cleansed)
        if isinstance(cleansed, Secret):
            return Shown(repr(cleansed))
        return cleansed

    def get_traceback_frame_variables(self, request, tb_frame):
        shown = []
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            if isinstance(value, str) and value == self.cleansed_substitute:
                shown.append((name, value))
            elif isinstance(name, str) and SECRET_LOCAL.search(name) and not isinstance(value, Secret):
                shown.append((name, self.cleansed_substitute))
            else:
                shown.append((name, Shown(cleanse_text(safe_repr(value)))))
        return shown


def safe_repr(value) -> str:
    try:
        return pformat(value)
    except Exception as exc:  # a broken __repr__ must not hide the original error
        return f"Error in formatting: {exc.__class__.__name__}"
