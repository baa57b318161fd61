"""Broker connections that survive a real Redis restart (celery 5.7 with kombu 5.7).

When the broker's connection breaks, Celery 5.7's consumer (``on_connection_error_after_
connected``, since celery#10242 for GH-9705) first ``collect()``s the connection, then
``close()``s it. kombu's ``Connection.collect()`` drops the transport (``transport.client =
None``) but keeps ``_default_channel``; the ``close()`` that follows closes that channel,
which restores unacked messages through a transport with no client and raises
``AttributeError: 'NoneType' object has no attribute 'hostname'`` from
``kombu.transport.redis.Channel._connparams``. ``ignore_errors`` only ignores connection
errors, so the worker stops for good ("Unrecoverable error"), with exit code 0, on every
Redis restart (the same path as kombu#582).

The fix, narrow and local to wanotify's Celery app: a collected connection forgets its
default channel too, as it forgets its transport and connection. Nothing else changes; the
unacked messages that channel held are restored by Redis's visibility timeout, as for any
worker that loses its connection.
"""

from __future__ import annotations

from typing import Any

from celery.app.amqp import AMQP
from kombu.connection import Connection


class CollectedConnection(Connection):
    def collect(self, socket_timeout: Any = None) -> None:
        super().collect(socket_timeout)
        self._default_channel = None  # bound to the transport collect() just dropped


class WanotifyAMQP(AMQP):
    Connection = CollectedConnection
    BrokerConnection = CollectedConnection
