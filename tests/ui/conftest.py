"""The console's tests drive the same headless Chromium as the documentation page's test (`browser`)."""

from tests.http.test_swagger_ui_live import browser

__all__ = ["browser"]
