"""gateway-sync's step for the greylist and connection-guard pages: the handlers of the
``whitelist_add``, ``whitelist_remove`` and ``unblock`` requests (``gateway.carry_out``), and
the publication of the greylist and the guard's state after the requests of the pass.

Each part is configured by a key of ``console-gateway.toml``: ``greylist_config`` (the
greylist milter's configuration file: its store and settings) and ``connwatch_config`` (the
connection guard's). An empty key leaves that part out. A part that cannot load its
configuration or reach its store fails its requests with the reason and publishes nothing;
the rest of the pass goes on."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from passerelle.console.connguard_side import publish_connguard, unblock_request
from passerelle.console.gateway import Handler, Refused
from passerelle.console.greylist_side import publish_greylist, whitelist_change
from passerelle.console.published import PublishedState
from passerelle.console.requests import Request

log = logging.getLogger("passerelle.console.pages_sync")
STORE_TIMEOUT = 10.0


@dataclass
class PagesSync:
    conn: Any
    gateway: str
    greylist_config: str = ""
    connwatch_config: str = ""
    now: float = 0.0
    _greylist: Any = None
    _store: Any = None
    _connwatch: Any = None
    errors: list[str] = field(default_factory=list)

    def _greylist_parts(self) -> tuple[Any, Any]:
        if self._store is None:
            from passerelle.greylist.config import load_config
            from passerelle.greylist.store import open_store

            try:
                self._greylist = load_config(self.greylist_config)
                assert self._greylist.store_url is not None
                self._store = open_store(self._greylist.store_url, STORE_TIMEOUT)
            except Exception as exc:
                raise Refused(
                    f"greylist store not reached ({self.greylist_config}): {exc}"
                ) from None
        return self._greylist, self._store

    def _connwatch_cfg(self) -> Any:
        if self._connwatch is None:
            from passerelle.connwatch.guard import load_config

            try:
                self._connwatch = load_config(self.connwatch_config)
            except Exception as exc:
                raise Refused(f"connection guard config {self.connwatch_config}: {exc}") from None
        return self._connwatch

    def handlers(self) -> dict[str, Handler]:
        out: dict[str, Handler] = {}
        if self.greylist_config:

            def whitelist(req: Request, by: str) -> str:
                _cfg, store = self._greylist_parts()
                return whitelist_change(store, PublishedState(self.conn), req, self.now)

            out["whitelist_add"] = out["whitelist_remove"] = whitelist
        if self.connwatch_config:

            def unblock(req: Request, by: str) -> str:
                return unblock_request(self._connwatch_cfg(), req)

            out["unblock"] = unblock
        return out

    def publish(self, now: float) -> bool:
        """Publish what is configured; False (said in the log) when a part could not."""
        ok = True
        state = PublishedState(self.conn)
        try:
            state.migrate()  # the console created it at start: no DDL here
        except Exception as exc:
            log.error("greylist and connection guard not published: %s", exc)
            self.errors.append("pages not published")
            return False
        if self.greylist_config:
            try:
                cfg, store = self._greylist_parts()
                publish_greylist(store, state, self.gateway, cfg.whitelist, cfg.min_delay, now)
            except Exception as exc:
                log.error("greylist not published: %s", exc)
                self.errors.append("greylist not published")
                ok = False
        if self.connwatch_config:
            try:
                publish_connguard(self._connwatch_cfg(), state, self.gateway, now)
            except Exception as exc:
                log.error("connection guard state not published: %s", exc)
                self.errors.append("connection guard state not published")
                ok = False
        return ok

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
