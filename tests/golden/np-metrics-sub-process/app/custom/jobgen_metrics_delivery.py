"""Hold the end of a run until the server has every metric point its clients sent.

Copied by nvflare-jobgen into ``app/custom/`` of every job with a ``receiver``; the server app
loads :class:`MetricsDeliveryServer` from there, each client app :class:`MetricsDeliveryClient`.

Why: NVFlare sends each metric point from a client to the server as its own fire-and-forget
federated event (``ClientFedEventRunner`` -> ``fire_and_forget_aux_request``); nothing is
acknowledged. Under CPU load the points reach the server seconds after they were logged, and the
run ends before they arrive: once its clients have ended, the simulator aborts the server
(``SimulatorRunner``), which stops the server's ``FedEventRunner`` from posting what it holds, and
a receiver drops every point that comes after its ``END_RUN``. The points are lost without a log
line. Measured with NVFlare 2.9 on 2 cores, 6 jobs of 2 sites x 750 points at once: 5 of 6 jobs
lost 15-47% of a site's points; with these components, none lost any.

How: NVFlare's own end-of-run handshake (``EventType.CHECK_END_RUN_READINESS``: a component that
sets ``FLContextKey.NOT_READY_TO_END_RUN`` keeps its site from ending) and one aux request:

- :class:`MetricsDeliveryClient` counts the federated metric events its site fires and keeps them.
  At the end of the run it asks the server how many of them the server has posted to its
  receivers, and keeps its site from ending until that is all of them;
- :class:`MetricsDeliveryServer` counts the events it posts, per site, answers the question, and
  keeps the server from ending while a site that sent points has not had them all.

A point can also be lost on the way, not only late: one of 1,875 was, in one of 9 runs of the
shipped jobs under load (a fire-and-forget stream that fails is logged at DEBUG only). So when
no new point has reached the server for ``resend_after`` seconds, the client asks which of its
event IDs the server has not posted and sends those again, each as an aux request the server's
``FedEventRunner`` acknowledges (topic ``fed.event``, the event unchanged). That runner drops an
event whose ID it already received from the site, so a point is never stored twice.

Each side gives up after ``stall_timeout`` seconds in which no point arrives (the missing points
are then reported lost, as before); the app config variable ``end_run_readiness_timeout``
(NVFlare's default: 5 s) caps the whole wait of each side. Nothing else changes: the points still
travel NVFlare's way and the receivers are NVFlare's.
"""

import collections
import threading
import time

from nvflare.apis.event_type import EventType
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_constant import EventScope, FedEventHeader, FLContextKey, ReservedKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable, make_reply

#: The aux topic a client asks the server on.
TOPIC = "jobgen.metrics_delivery"
#: The topic NVFlare's FedEventRunner receives federated events on (``nvflare.widgets.fed_event``).
FED_EVENT_TOPIC = "fed.event"
#: Events a client keeps for sending again; beyond it the oldest are dropped (about 1 KB each).
MAX_KEPT = 100_000
#: Default federated metric event (NVFlare's ``ConvertToFedEvent`` prefix + ``analytix_log_stats``).
FED_ANALYTIC_EVENT = "fed.analytix_log_stats"
_SENT = "sent"
_POSTED = "posted"
_IDS = "event_ids"
_MISSING = "missing"


def _event_direction(fl_ctx: FLContext):
    """``"out"`` for a federated event this site fires, ``"in"`` for one the server posts; None otherwise."""
    if fl_ctx.get_prop(FLContextKey.EVENT_SCOPE, EventScope.LOCAL) != EventScope.FEDERATION:
        return None
    data = fl_ctx.get_prop(FLContextKey.EVENT_DATA, None)
    if not isinstance(data, Shareable):
        return None
    return data.get_header(FedEventHeader.DIRECTION, "out")


class _Progress:
    """When a count last grew, to give up after ``stall_timeout`` seconds without growth."""

    def __init__(self, stall_timeout: float):
        self.stall_timeout = stall_timeout
        self.count = None
        self.since = None

    def quiet_for(self, count: int) -> float:
        """Seconds since ``count`` last grew (0 when it grows now)."""
        now = time.monotonic()
        if self.count is None or count > self.count:
            self.count, self.since = count, now
        return now - self.since

    def stalled(self, count: int) -> bool:
        return self.quiet_for(count) > self.stall_timeout


class MetricsDeliveryClient(FLComponent):
    def __init__(self, events=None, ask_timeout=5.0, resend_after=5.0, stall_timeout=30.0):
        """Count and keep this site's federated metric events; at the end of the run, wait until the
        server has them, sending again those it still lacks after ``resend_after`` seconds.

        Args:
            events (list[str]): the federated event types the server's receiver stores
                (default ``["fed.analytix_log_stats"]``).
            ask_timeout (float): seconds one question (or one event sent again) may take.
            resend_after (float): seconds without a new point reaching the server after which the
                points it lacks are sent again.
            stall_timeout (float): seconds without a new point reaching the server after which
                this site stops waiting.
        """
        super().__init__()
        self.events = list(events or [FED_ANALYTIC_EVENT])
        self.ask_timeout = ask_timeout
        self.resend_after = resend_after
        self.sent = 0
        self._kept = collections.deque(maxlen=MAX_KEPT)  # the events, as sent (NVFlare set their IDs)
        self._lock = threading.Lock()
        self._progress = _Progress(stall_timeout)
        self._resent_at = None
        self._posted = 0

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type in self.events:
            if _event_direction(fl_ctx) == "out":
                with self._lock:
                    self.sent += 1
                    self._kept.append(fl_ctx.get_prop(FLContextKey.EVENT_DATA))
        elif event_type == EventType.CHECK_END_RUN_READINESS:
            if not self._delivered(fl_ctx):
                fl_ctx.set_prop(FLContextKey.NOT_READY_TO_END_RUN, value=True, private=True, sticky=False)

    def _ask(self, sent: int, fl_ctx: FLContext, ids=None):
        """The server's answer (``posted``: how many of this site's points it has posted; with ``ids``,
        also ``missing``: those of them it has not) and it learns ``sent``; None: no answer."""
        request = Shareable()
        request[_SENT] = sent
        if ids is not None:
            request[_IDS] = ids
        replies = fl_ctx.get_engine().send_aux_request(
            targets=None, topic=TOPIC, request=request, timeout=self.ask_timeout, fl_ctx=fl_ctx
        )
        for reply in (replies or {}).values():
            if isinstance(reply, Shareable) and reply.get_return_code() == ReturnCode.OK and _POSTED in reply:
                return reply
        return None

    def _resend_missing(self, sent: int, fl_ctx: FLContext) -> None:
        """Send again, acknowledged, each kept event whose ID the server has not posted."""
        with self._lock:
            kept = {data.get_header(FedEventHeader.EVENT_ID): data for data in self._kept}
        kept.pop(None, None)
        answer = self._ask(sent, fl_ctx, ids=list(kept))
        missing = [kept[i] for i in (answer.get(_MISSING) or []) if i in kept] if answer else []
        engine = fl_ctx.get_engine()
        acked = 0
        for data in missing:
            replies = engine.send_aux_request(
                targets=None, topic=FED_EVENT_TOPIC, request=data, timeout=self.ask_timeout, fl_ctx=fl_ctx
            )
            acked += any(isinstance(r, Shareable) and r.get_return_code() == ReturnCode.OK for r in replies.values())
        self.log_info(
            fl_ctx, f"sent {len(missing)} metric points again that the server lacked; it acknowledged {acked}"
        )

    def _delivered(self, fl_ctx: FLContext) -> bool:
        with self._lock:
            sent = self.sent
        if sent == 0:
            return True
        answer = self._ask(sent, fl_ctx)
        if answer is not None:
            self._posted = answer[_POSTED]
        if self._posted >= sent:
            self.log_info(fl_ctx, f"the server has all {sent} metric points of this site")
            return True
        now = time.monotonic()
        last_resend = self._resent_at if self._resent_at is not None else float("-inf")
        if self._progress.quiet_for(self._posted) > self.resend_after and now - last_resend > self.resend_after:
            self._resend_missing(sent, fl_ctx)
            self._resent_at = time.monotonic()
        if self._progress.stalled(self._posted):
            self.log_warning(
                fl_ctx,
                f"the server has {self._posted} of {sent} metric points of this site and got none for "
                f"{self._progress.stall_timeout} s: ending the run without the rest",
            )
            return True
        self.log_info(fl_ctx, f"waiting for the server to have this site's metric points: {self._posted} of {sent}")
        return False


class MetricsDeliveryServer(FLComponent):
    def __init__(self, events=None, stall_timeout=30.0):
        """Count the federated metric events posted to the receivers, per site; at the end of the run,
        wait while a site that sent points has not had them all.

        Args:
            events (list[str]): the federated event types the receiver stores (as the clients').
            stall_timeout (float): seconds without a new point after which the server stops waiting.
        """
        super().__init__()
        self.events = list(events or [FED_ANALYTIC_EVENT])
        self.posted = {}  # site -> points posted to the receivers
        self.posted_ids = {}  # site -> IDs of the events posted
        self.sent = {}  # site -> points the site says it sent
        self._lock = threading.Lock()
        self._progress = _Progress(stall_timeout)

    def handle_event(self, event_type: str, fl_ctx: FLContext):
        if event_type == EventType.START_RUN:
            fl_ctx.get_engine().register_aux_message_handler(topic=TOPIC, message_handle_func=self._answer)
        elif event_type in self.events:
            if _event_direction(fl_ctx) == "in":
                data = fl_ctx.get_prop(FLContextKey.EVENT_DATA)
                site = data.get_peer_prop(ReservedKey.IDENTITY_NAME, None)
                with self._lock:
                    self.posted[site] = self.posted.get(site, 0) + 1
                    self.posted_ids.setdefault(site, set()).add(data.get_header(FedEventHeader.EVENT_ID))
        elif event_type == EventType.CHECK_END_RUN_READINESS:
            if not self._all_delivered(fl_ctx):
                fl_ctx.set_prop(FLContextKey.NOT_READY_TO_END_RUN, value=True, private=True, sticky=False)

    def _answer(self, topic: str, request: Shareable, fl_ctx: FLContext) -> Shareable:
        site = request.get_peer_prop(ReservedKey.IDENTITY_NAME, None)
        reply = make_reply(ReturnCode.OK)
        with self._lock:
            self.sent[site] = request.get(_SENT, 0)
            reply[_POSTED] = self.posted.get(site, 0)
            ids = request.get(_IDS)
            if ids is not None:
                posted = self.posted_ids.get(site, set())
                reply[_MISSING] = [i for i in ids if i not in posted]
        return reply

    def _all_delivered(self, fl_ctx: FLContext) -> bool:
        with self._lock:
            # A site that posted points but has not said how many it sent has not reached its end yet.
            waiting = {
                site: (self.posted.get(site, 0), self.sent.get(site))
                for site in set(self.posted) | set(self.sent)
                if self.sent.get(site) is None or self.posted.get(site, 0) < self.sent[site]
            }
            total = sum(self.posted.values())
        if not waiting:
            return True
        if self._progress.stalled(total):
            self.log_warning(
                fl_ctx, f"no metric point arrived for {self._progress.stall_timeout} s: ending the run ({waiting})"
            )
            return True
        self.log_info(fl_ctx, f"waiting for metric points, site: (posted, sent): {waiting}")
        return False
