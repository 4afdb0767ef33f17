"""`stream-s5 serve --ray`: the same server as a Ray Serve application, for many processes and machines.

    stream-s5 serve --ray --replicas 2                 # local Ray: two replicas, page on http://127.0.0.1:8765/
    stream-s5 serve --ray --autoscale 1:4              # replicas follow the number of streams
    stream-s5 serve --ray --address ray://HEAD:10001   # an existing Ray cluster (KubeRay): docs/scaling.md

Each replica is one process holding one `StreamServer` (its `StreamPool`, batching loop and page) behind
Ray Serve's HTTP proxy, which keeps a WebSocket on the replica that accepted it: a stream's recurrent
state never moves. `max_ongoing_requests` is the replica's stream capacity plus a few requests of spare
(the page, health checks, and the refusal of a stream beyond capacity, which the replica closes with 1013
and a reason instead of Ray queueing it silently).

Failures: a replica that dies takes only its own streams; the proxy closes them with 1012 and the
replica's name (`ReplicaLossMiddleware`, loaded into Ray's proxy through
RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH), and clients reconnect (`ResilientEngine`, the page). A replica
that Ray stops (scale-down, redeploy) drains: Ray routes no new streams to it, and its running streams
may finish within `--drain-grace-s`, after which they are closed with 1001 and a reason.

`ray[serve]` is an optional extra (`pip install -e ".[ray]"`): nothing else in stream_s5 imports ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from dataclasses import dataclass

from stream_s5.serve import protocol as P
from stream_s5.serve.server import ServerOptions, create_app, open_line

__all__ = ["RayOptions", "ReplicaLossMiddleware", "proxy_middlewares", "build_application", "app_builder",
           "serve_config", "deployment_settings", "deploy", "run_ray", "start_local_ray",
           "PROXY_CALLBACK_ENV", "PROXY_CALLBACK"]

APP_NAME = "stream_s5"
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "stream_s5.serve.ray_app:proxy_middlewares"
TOKEN_ENV = "STREAM_S5_TOKEN"


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

    def check(self):
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


def deploy(options: ServerOptions, ray_options: RayOptions, timeout_s: float = 120.0):
    """Start Serve's proxy on options.host:options.port (if not running) and apply this deployment's
    config; returns when it is running. Calling it again with other replica settings scales in place."""
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    options.check()
    ray_options.check()
    config = serve_config(options, ray_options)
    client = serve_start(http_options=config["http_options"])
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": config["applications"]}))
    deadline = time.monotonic() + timeout_s
    time.sleep(0.5)  # the controller takes the new config first
    while True:
        status = serve.status().applications.get(ray_options.app_name)
        if status is not None and status.status == "RUNNING" and all(
                d.status == "HEALTHY" for d in status.deployments.values()):
            return status
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"the Ray Serve application failed: {status.message}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray Serve application was not running after {timeout_s:g} s")
        time.sleep(0.2)


def start_local_ray(ray_options: RayOptions):
    """A local Ray for this process, with the proxy middleware in its environment (inherited by
    every Ray process it starts)."""
    import logging

    import ray

    os.environ[PROXY_CALLBACK_ENV] = PROXY_CALLBACK
    ray.init(num_cpus=ray_options.local_cpus, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, object_store_memory=256 * 1024 * 1024)


def run_ray(options: ServerOptions, ray_options: RayOptions, announce=lambda line: print(line, flush=True)) -> int:
    """Serve until Ctrl-C / SIGTERM; a local Ray is stopped on exit, a remote cluster keeps running
    (only this application is deleted)."""
    import ray
    from ray import serve

    local = ray_options.address is None
    if local:
        start_local_ray(ray_options)
    else:
        ray.init(address=ray_options.address, logging_level="WARNING", log_to_driver=False)
        announce(f"note: the cluster's proxies need {PROXY_CALLBACK_ENV}={PROXY_CALLBACK} in their environment "
                 "for replica losses to close with a reason (docs/scaling.md)")
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        deploy(options, ray_options)
        replicas = (f"{ray_options.autoscale[0]}..{ray_options.autoscale[1]} replicas (autoscaling)"
                    if ray_options.autoscale else f"{ray_options.replicas} replica(s)")
        announce(f"stream-s5 serve --ray: {replicas} of {options.max_streams} streams, "
                 f"{'local Ray' if local else 'Ray at ' + ray_options.address}")
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
