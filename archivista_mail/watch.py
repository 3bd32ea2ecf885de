"""The watch service: new mail archived within seconds, through the one import loop.

``archivista-mail watch`` runs until SIGTERM. For every enabled account it waits for new mail in
the cheapest way its source offers (``Source.watch_mode``): IMAP folders with IDLE (RFC 2177), one
connection each, up to ``watch_idle_folders`` of them, the IDLE re-issued every
``watch_idle_renew_seconds``, the folders beyond on one more connection with NOTIFY (RFC 5465) where the
server offers it, else with STATUS every ``watch_poll_seconds``;
Microsoft 365 with Graph change notifications posted to WebAdmin (when its DNS name is https); Gmail with
users.watch and a Pub/Sub pull subscription; Exchange (EWS) with streaming notifications, one stream per
mailbox; every other source (POP3) by an import every ``watch_poll_seconds``.
A watch only says "something may be new"; the normal import then runs for that folder, with the
same pipeline, ledger, after-archive actions and the import lock cron's ``import`` takes, so the
two never work at once and never archive a mail twice. A crash loses nothing: the next start (or
cron) catches up from the folders' cursors.

Threads: one per IDLE folder, per NOTIFY or STATUS connection, per notified, pushed or polled account and
per streamed EWS mailbox put triggers on a queue; the main thread runs the imports one after the other.
A watch whose server refuses push is polled for ``watch_push_retry_seconds``, then push is tried again; a
lost connection is tried again after a pause of 5 s growing to 5 minutes. The watchers' state (how each folder is watched, when it
last heard from the server, the last latency) is kept in the state database for WebAdmin.
"""

from __future__ import annotations

import logging
import queue
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .accounts import Account
from .archive import open_archive
from .config import Config
from .errors import ArchivistaMailError, ConnectError
from .importer import Importer
from .links import BASE_URL_SETTING
from .runs import import_lock
from .sources.base import Folder
from .state import State
from .vault import Vault

log = logging.getLogger(__name__)
WATCH_SETTING = "watch_enabled"  # WebAdmin's "Sofort archivieren (Push)"
RECHECK_SECONDS = 10  # how often the accounts and the setting are read again
COALESCE_SECONDS = 0.2  # triggers arriving this close together share one import
PULL_WAIT = 5.0  # seconds a Pub/Sub pull may wait for a message (the server may answer sooner)
# EWS streams are held open one minute at a time (Exchange allows 1 to 30): a watch that is stopped or whose
# connection went silent is done within two minutes (exchangelib's read timeout is one minute more)
STREAM_MINUTES = 1


@dataclass(frozen=True)
class Trigger:
    account: str
    folder: str | None  # None: every folder of the account
    at: float  # time.time() when the watch noticed


class Watcher:
    """Runs the watches of one data directory until ``stop`` is set."""

    def __init__(self, config: Config, stop: threading.Event | None = None) -> None:
        self.config = config
        self.stop = stop or threading.Event()
        self.state = State(config.data_dir)
        self.archive = open_archive(config.data_dir, config.archive_backend)
        self.triggers: queue.Queue[Trigger] = queue.Queue()
        self.threads: list[threading.Thread] = []
        self._stop_watches = threading.Event()
        self._signature: object = None

    # -- the main loop ----------------------------------------------------------------------------------------
    def run(self) -> None:
        """Watch until stopped; returns after the current import's commit and the watches' end."""
        self.state.ensure_schema()
        self.archive.ensure_schema()
        next_check = 0.0
        try:
            while not self.stop.is_set():
                if time.monotonic() >= next_check:
                    self._refresh()
                    next_check = time.monotonic() + RECHECK_SECONDS
                try:
                    first = self.triggers.get(timeout=0.5)
                except queue.Empty:
                    continue
                batch = [first]
                deadline = time.monotonic() + COALESCE_SECONDS
                while (left := deadline - time.monotonic()) > 0:
                    try:
                        batch.append(self.triggers.get(timeout=left))
                    except queue.Empty:
                        break
                self._import(batch)
        finally:
            self._stop_all()
            self.archive.close()
            self.state.close()

    def _refresh(self) -> None:
        """Start or restart the watches when the setting or the accounts changed."""
        enabled = self.state.setting(WATCH_SETTING, "") == "1"
        accounts = [a for a in self.state.accounts() if a.enabled and not a.source.outgoing] if enabled else []
        notify_url = self._notify_url()
        signature = [notify_url, *((a.name, a.kind, sorted(a.settings.items(), key=str), a.secret) for a in accounts)]
        if signature == self._signature:
            return
        self._stop_all()
        self.state.prune_watch_events()
        self._signature = signature
        self._stop_watches = threading.Event()
        self.state.clear_watch_status()
        idle_left = self.config.watch_idle_folders
        vault = Vault(self.config.key_path)
        for acc in accounts:
            if acc.source.watch_mode == "notifications" and notify_url:
                self._start(self._notifications, acc, vault, notify_url)
                continue
            if acc.source.watch_mode == "pubsub" and acc.settings.get("pubsub_subscription"):
                self._start(self._pubsub, acc, vault)
                continue
            if acc.source.watch_mode == "streaming":
                for group in acc.source.watch_groups(acc):
                    self._start(self._streaming, acc, vault, group)
                continue
            if acc.source.watch_mode == "idle":
                polled: list[str] = []  # beyond the IDLE limit
                for folder in acc.folders:
                    if idle_left > 0:
                        idle_left -= 1
                        self._start(self._idle, acc, vault, folder)
                    else:
                        polled.append(folder)
                plain = [label for label in polled if label.isascii() and "&" not in label]
                for share, try_notify in ((plain, True), ([x for x in polled if x not in plain], False)):
                    if share:
                        self._start(self._beyond_idle, acc, vault, share, try_notify)
                continue
            self._start(self._poll, acc, vault, None)
        # what came in while nobody watched (a restart, a crash): the cursors say where to go on
        for acc in accounts:
            self.triggers.put(Trigger(acc.name, None, time.time()))

    def _notify_url(self) -> str:
        """Where Graph can post change notifications: WebAdmin's /graph/notify under the DNS name of the direct
        links, when that is https (Graph calls nothing else); '' otherwise (those accounts are polled)."""
        base = self.state.setting(BASE_URL_SETTING, "")
        return f"{base.rstrip('/')}/graph/notify" if base.startswith("https://") else ""

    def _start(self, target: Callable, *args) -> None:
        thread = threading.Thread(target=target, args=(*args, self._stop_watches), daemon=True,
                                  name=f"watch-{args[0].name}")
        thread.start()
        self.threads.append(thread)

    def _stop_all(self) -> None:
        """End the watches: each leaves IDLE within a second; one still connecting is left behind (a daemon
        thread), so SIGTERM is never held up by a server that does not answer."""
        self._stop_watches.set()
        deadline = time.monotonic() + 3
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.threads = []

    def _import(self, batch: list[Trigger]) -> None:
        """One import per account for the folders triggered (all of them if one trigger names none)."""
        by_account: dict[str, set[str] | None] = {}
        first: dict[str, float] = {}
        for trig in batch:
            folders = by_account.get(trig.account, set())
            by_account[trig.account] = None if folders is None or trig.folder is None else folders | {trig.folder}
            first[trig.account] = min(first.get(trig.account, trig.at), trig.at)
        for name, folders in by_account.items():
            if self.stop.is_set():
                return
            with import_lock(self.config.data_dir, wait=0) as locked:
                if not locked:  # cron's import runs: it archives the mail, or we do once it is done
                    self.triggers.put(Trigger(name, None, first[name]))
                    self.stop.wait(1)
                    continue
                importer = Importer(self.config, self.archive, self.state)
                importer.folders = folders
                importer.should_stop = self.stop.is_set
                try:
                    summary = importer.run(name, actor="watch", record_idle=False)
                    if summary.archived and self.config.extract_on_import and not self.stop.is_set():
                        importer.extract_pending()
                except ArchivistaMailError as e:
                    log.warning("%s", e)
                    continue
                except Exception:  # noqa: BLE001 - a bug or an untranslated library error: the service goes on
                    log.exception("Importing %s failed unexpectedly; the next notice (or cron) tries again.", name)
                    continue
                if summary.archived:
                    latency = time.time() - first[name]
                    self.state.save_watch_latency(name, folders, latency)
                for error in summary.errors:
                    log.warning("%s", error)

    # -- the watches -------------------------------------------------------------------------------------------
    def _poll(self, acc: Account, vault: Vault, folders: list[str] | None, stop: threading.Event,
              fallback: bool = False) -> None:
        """Every watch_poll_seconds: an import of the account (or of some folders). ``fallback``: push was refused,
        the folders' status already says why, and push is tried again after watch_push_retry_seconds."""
        state = State(self.config.data_dir)  # a thread's own connection
        ends = time.monotonic() + self.config.watch_push_retry_seconds if fallback else None
        try:
            for label in [] if fallback else folders or ["*"]:
                state.save_watch_status(acc.name, label, "polling")
            targets: list[str | None] = list(folders) if folders else [None]
            while not stop.wait(self.config.watch_poll_seconds):
                for folder in targets:
                    self.triggers.put(Trigger(acc.name, folder, time.time()))
                if ends is not None and time.monotonic() >= ends:
                    return
        finally:
            state.close()

    def _beyond_idle(self, acc: Account, vault: Vault, folders: list[str], try_notify: bool,
                     stop: threading.Event) -> None:
        """IMAP folders beyond the IDLE limit, on one connection: NOTIFY (RFC 5465) where the server offers it (the
        connection idles and the server names the folder with new mail), else STATUS every watch_poll_seconds, an
        import only for a folder whose UIDNEXT, UIDVALIDITY or message count changed. ``try_notify``: False for
        folders with names beyond ASCII (Dovecot 2.3 does not announce them)."""
        state = State(self.config.data_dir)
        last: dict[str, tuple] = {}
        pause = 1.0
        mode = "polling"
        try:
            for label in folders:
                state.save_watch_status(acc.name, label, mode)
            while not stop.is_set():
                try:
                    source = acc.source(acc, vault.secret_of(acc), self.config)
                    with source:
                        mode = "notify" if try_notify and source.notify(folders) else "polling"
                        pause = 1.0
                        for label in folders:
                            state.save_watch_status(acc.name, label, mode, seen=True)
                            if mode == "notify":
                                self.triggers.put(Trigger(acc.name, label, time.time()))  # came while connecting
                        while not stop.is_set():
                            if mode == "notify":
                                for label in source.idle(stop, self.config.watch_idle_renew_seconds):
                                    self.triggers.put(Trigger(acc.name, label, time.time()))
                            else:
                                for label in folders:
                                    now = source.folder_state(label)
                                    if last.get(label) != now:
                                        if label in last:
                                            self.triggers.put(Trigger(acc.name, label, time.time()))
                                        last[label] = now
                                stop.wait(self.config.watch_poll_seconds)
                            if not stop.is_set():
                                for label in folders:
                                    state.save_watch_status(acc.name, label, mode, seen=True)
                except Exception as e:  # noqa: BLE001 - ours and OSError expected; anything else is logged in full
                    for label in folders:
                        state.save_watch_status(acc.name, label, mode, error=str(e))
                    log.warning("Watching %s: %s Connecting again in %.0f s.", acc.name, e, pause,
                                exc_info=not isinstance(e, (ArchivistaMailError, OSError)))
                    stop.wait(pause)
                    pause = min(pause * 2, 60.0)
        finally:
            state.close()

    def _again(self, once: Callable[..., bool | None], acc: Account, *args) -> None:
        """Run a push watch; after a failure (a lost connection, an outage) wait, growing from 5 s to 5 minutes,
        and start it again. Meanwhile each pause ends with an import of the account."""
        stop = args[-1]
        pause = 5.0
        while not stop.is_set():
            started = time.monotonic()
            try:
                result = once(acc, *args)
            except Exception:  # noqa: BLE001 - a bug or an untranslated library error: the watch goes on
                log.exception("Watching %s failed unexpectedly; it starts again after a pause.", acc.name)
                result = False
            if result is not False:
                return
            if time.monotonic() - started > 300:  # it had worked for a while: not the same outage
                pause = 5.0
            if stop.wait(pause):
                return
            pause = min(pause * 2, 300.0)
            self.triggers.put(Trigger(acc.name, None, time.time()))

    def _notifications(self, acc: Account, vault: Vault, url: str, stop: threading.Event) -> None:
        self._again(self._notifications_once, acc, vault, url, stop)

    def _pubsub(self, acc: Account, vault: Vault, stop: threading.Event) -> None:
        self._again(self._pubsub_once, acc, vault, stop)

    def _streaming(self, acc: Account, vault: Vault, group: str, stop: threading.Event) -> None:
        self._again(self._streaming_once, acc, vault, group, stop)

    def _notifications_once(self, acc: Account, vault: Vault, url: str, stop: threading.Event) -> bool | None:
        """Graph change notifications: a subscription per folder (clientState a fresh secret), renewed when half
        its lifetime is gone and made anew when Graph removes it; each notification WebAdmin accepted triggers
        a delta read of its folder. Without subscriptions (Graph cannot validate the URL) the account is polled."""
        state = State(self.config.data_dir)
        subs: dict[str, tuple[Folder, float, float]] = {}  # id -> (folder, expires, granted at)
        try:
            with acc.source(acc, vault.secret_of(acc), self.config) as source:
                last = state.last_watch_event()
                folders = {f.label: f for f in source.folders()}
                # Subscriptions a killed watcher left behind: deleted, so Graph stops posting for them.
                self._unsubscribe(source, state, {sid: (folders[label], 0.0, 0.0) for sid, label in
                                                  state.graph_subscriptions(acc.name) if label in folders})
                for sid, _ in state.graph_subscriptions(acc.name):
                    state.drop_graph_subscription(sid)

                def subscribe(folder: Folder) -> None:
                    client_state = secrets.token_urlsafe(32)
                    sid, expires = source.subscribe(folder, url, client_state, self.config.watch_graph_seconds)
                    state.save_graph_subscription(sid, acc.name, folder.label, client_state, expires)
                    subs[sid] = (folder, expires, time.time())
                    state.save_watch_status(acc.name, folder.label, "notifications", seen=True)

                try:
                    for folder in source.folders():
                        subscribe(folder)
                except ArchivistaMailError as e:
                    self._unsubscribe(source, state, subs)
                    return self._polled_instead(acc, vault, stop, state, list(folders), e)
                state.forget_watch_status(acc.name, "*")  # a problem of an earlier attempt
                self.triggers.put(Trigger(acc.name, None, time.time()))  # what came before the subscriptions
                try:
                    while not stop.wait(0.25):
                        for event, sid, kind, at in state.watch_events(last, list(subs)):
                            last = max(last, event)
                            if sid not in subs:
                                continue
                            folder = subs[sid][0]
                            if kind == "subscriptionRemoved":
                                subs.pop(sid)
                                state.drop_graph_subscription(sid)
                                subscribe(folder)
                            elif kind == "reauthorizationRequired":
                                subs[sid] = (folder, source.renew(folder, sid, self.config.watch_graph_seconds),
                                             time.time())
                            if kind != "reauthorizationRequired":  # created, missed, removed: read the delta
                                self.triggers.put(Trigger(acc.name, folder.label, at))
                                state.save_watch_status(acc.name, folder.label, "notifications", seen=True)
                        for sid, (folder, expires, granted) in list(subs.items()):
                            if time.time() > granted + (expires - granted) / 2:  # half its lifetime is gone
                                try:
                                    subs[sid] = (folder, source.renew(folder, sid, self.config.watch_graph_seconds),
                                                 time.time())
                                except ArchivistaMailError:
                                    subs.pop(sid)
                                    state.drop_graph_subscription(sid)
                                    subscribe(folder)
                                    self.triggers.put(Trigger(acc.name, folder.label, time.time()))
                finally:
                    self._unsubscribe(source, state, subs)
        except (ArchivistaMailError, OSError) as e:
            return self._lost(acc, state, ["*"], "notifications", e)
        finally:
            state.close()
        return True

    def _pubsub_once(self, acc: Account, vault: Vault, stop: threading.Event) -> bool | None:
        """Gmail: users.watch for each mailbox (again every watch_gmail_rewatch_seconds), then pulls from the
        Pub/Sub subscription; a message naming a mailbox starts a history read of its labels. The message is only a
        hint (acknowledged once the import is asked for): the history id cursor says what is new. Without Pub/Sub
        (a refused watch or pull) the account is polled."""
        state = State(self.config.data_dir)
        try:
            with acc.source(acc, vault.secret_of(acc), self.config) as source:
                labels = {mailbox: [f"{mailbox}/{label}" for label in acc.labels] for mailbox in acc.mailboxes}
                watched: dict[str, float] = {}
                try:
                    for mailbox in acc.mailboxes:
                        source.start_watch(mailbox)
                        watched[mailbox] = time.time()
                    source.pull(0)  # may the service account pull? (answers at once when nothing is there)
                except ArchivistaMailError as e:
                    return self._polled_instead(acc, vault, stop, state, [x for f in labels.values() for x in f], e)
                state.forget_watch_status(acc.name, "*")  # a problem of an earlier attempt
                for folders in labels.values():
                    for label in folders:
                        state.save_watch_status(acc.name, label, "push", seen=True)
                self.triggers.put(Trigger(acc.name, None, time.time()))  # what came before the watch
                try:
                    while not stop.is_set():
                        received = source.pull(PULL_WAIT)
                        source.acknowledge([ack for ack, _ in received if ack])  # a hint; the cursor is the truth
                        for _, mailbox in received:
                            for label in labels.get(mailbox, []):
                                self.triggers.put(Trigger(acc.name, label, time.time()))
                                state.save_watch_status(acc.name, label, "push", seen=True)
                        for mailbox, since in watched.items():
                            if time.time() - since > self.config.watch_gmail_rewatch_seconds:
                                source.start_watch(mailbox)
                                watched[mailbox] = time.time()
                finally:
                    for mailbox in watched:
                        try:
                            source.stop_watch(mailbox)
                        except ArchivistaMailError:
                            pass  # it expires by itself
        except (ArchivistaMailError, OSError) as e:
            return self._lost(acc, state, ["*"], "push", e)
        finally:
            state.close()
        return True

    def _streaming_once(self, acc: Account, vault: Vault, group: str, stop: threading.Event) -> bool | None:
        """EWS streaming notifications for one mailbox: a subscription to its folders, then GetStreamingEvents held
        open STREAM_MINUTES at a time, again and again; each notification starts a sync of the folders it names.
        A stream that breaks (or stays silent past exchangelib's timeout, STREAM_MINUTES + 1 minute) or a
        subscription Exchange forgot (a restart) starts over with a new subscription after a pause (_again). A
        refused subscription makes the mailbox polled for a while. The stream has a connection pool of its own
        (a new one each time), so the imports always find a free connection."""
        state = State(self.config.data_dir)
        labels: list[str] = []
        try:
            source = acc.source(acc, vault.secret_of(acc), self.config)
            source.own_pool = f"watch:{group}:{secrets.token_hex(8)}"
            with source:
                labels = [f.label for f in source.folders() if f.group == group]
                try:
                    sid = source.stream_subscribe(group)
                except ArchivistaMailError as e:
                    return self._polled_instead(acc, vault, stop, state, labels, e)
                try:
                    state.forget_watch_status(acc.name, "*")  # a problem of an earlier attempt
                    for label in labels:
                        state.save_watch_status(acc.name, label, "streaming", seen=True)
                        self.triggers.put(Trigger(acc.name, label, time.time()))  # what came before the subscription
                    while not stop.is_set():
                        for announced in source.stream(group, sid, STREAM_MINUTES, stop):
                            for label in announced:
                                self.triggers.put(Trigger(acc.name, label, time.time()))
                        if not stop.is_set():  # a stopped watch's rows are gone: not written again
                            for label in labels:
                                state.save_watch_status(acc.name, label, "streaming", seen=True)
                finally:
                    try:
                        source.stream_unsubscribe(group, sid)
                    except ArchivistaMailError:
                        pass  # it expires by itself
        except (ArchivistaMailError, OSError) as e:
            return None if stop.is_set() else self._lost(acc, state, labels or ["*"], "streaming", e)
        finally:
            state.close()
        return True

    @staticmethod
    def _lost(acc: Account, state: State, labels: list[str], mode: str, error: Exception) -> bool:
        """A push watch lost its server: say why on its folders; False, so it is tried again after a pause
        (_again)."""
        for label in labels:
            state.save_watch_status(acc.name, label, mode, error=str(error))
        log.warning("Watching %s: %s", acc.name, error)
        return False

    def _polled_instead(self, acc: Account, vault: Vault, stop: threading.Event, state: State, labels: list[str],
                        error: ArchivistaMailError) -> bool:
        """Push was refused (not a lost connection: that is tried again soon): say why on each folder, poll the
        account for watch_push_retry_seconds; then False, so push is tried again (_again)."""
        if isinstance(error, ConnectError):
            raise error
        for label in labels:
            state.save_watch_status(acc.name, label, "polling", error=str(error))
        log.warning("%s Polling every %s s instead; push is tried again in %s s.", error,
                    self.config.watch_poll_seconds, self.config.watch_push_retry_seconds)
        self._poll(acc, vault, None, stop, fallback=True)
        return False

    @staticmethod
    def _unsubscribe(source, state: State, subs: dict) -> None:
        for sid, (folder, _, _) in list(subs.items()):
            try:
                source.unsubscribe(folder, sid)
            except ArchivistaMailError:
                pass  # it expires by itself
            state.drop_graph_subscription(sid)
        subs.clear()

    def _idle(self, acc: Account, vault: Vault, folder: str, stop: threading.Event) -> None:
        """IMAP IDLE on one folder, on its own connection, reconnecting with a growing pause after errors."""
        pause = 1.0
        state = State(self.config.data_dir)
        state.save_watch_status(acc.name, folder, "idle")
        try:
            while not stop.is_set():
                try:
                    with acc.source(acc, vault.secret_of(acc), self.config) as source:
                        source.watch_folder(folder)
                        state.save_watch_status(acc.name, folder, "idle", seen=True)
                        self.triggers.put(Trigger(acc.name, folder, time.time()))  # what came while reconnecting
                        pause = 1.0
                        while not stop.is_set():
                            if source.idle(stop, self.config.watch_idle_renew_seconds):  # the folder's labels
                                self.triggers.put(Trigger(acc.name, folder, time.time()))
                            state.save_watch_status(acc.name, folder, "idle", seen=True)
                except Exception as e:  # noqa: BLE001 - ours and OSError expected; anything else is logged in full
                    state.save_watch_status(acc.name, folder, "idle", error=str(e))
                    log.warning("Watching %s/%s: %s Connecting again in %.0f s.", acc.name, folder, e, pause,
                                exc_info=not isinstance(e, (ArchivistaMailError, OSError)))
                    stop.wait(pause)
                    pause = min(pause * 2, 60.0)
        finally:
            state.close()


def watch_forever(config: Config) -> None:
    """``archivista-mail watch``: until SIGTERM or SIGINT (which end it after the current commit)."""
    stop = threading.Event()

    def ask_to_stop(signum, frame) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, ask_to_stop)
    signal.signal(signal.SIGINT, ask_to_stop)
    Watcher(config, stop).run()
