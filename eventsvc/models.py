"""Every model, imported in one place for the metadata (migrations, tests)."""
from .auth.models import ApiToken, Organiser  # noqa: F401
from .events.models import Event, EventChange  # noqa: F401
from .outbox.models import Message  # noqa: F401
from .registrations.models import Registration  # noqa: F401
from .webhooks.models import Webhook  # noqa: F401
from .health import WorkerHeartbeat  # noqa: F401
from .pages.models import Page  # noqa: F401
