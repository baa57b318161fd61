"""Provider adapters: WhatsApp Cloud API (and, later, SMS and email)."""
