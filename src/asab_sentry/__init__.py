"""
asab-sentry: error tracking and performance monitoring in Sentry for ASAB microservices.

```python
import asab
import asab_sentry

class MyApplication(asab.Application):
	def __init__(self):
		super().__init__()
		self.SentryService = asab_sentry.SentryService(self)
```
"""

from .__version__ import __version__
from .errors import SentryConfigError
from .service import SentryService
from .settings import Settings
from .tracing import Measure

__all__ = [
	"Measure",
	"SentryConfigError",
	"SentryService",
	"Settings",
	"__version__",
]
