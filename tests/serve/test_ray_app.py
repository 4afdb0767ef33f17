"""The Ray Serve application's settings and CLI checks, without starting Ray (test_ray.py runs it)."""

import json

import pytest

from stream_s5.cli import main
from stream_s5.serve.ray_app import (HAPROXY_PORT_ENVS, PROXY_CALLBACK_ENV, RayOptions, deployment_settings,
                                     ingress_environment, serve_config)
from stream_s5.serve.server import ServerOptions


def test_a_replica_admits_its_stream_capacity_plus_a_spare_and_drains_before_ray_kills_it():
    s = deployment_settings(ServerOptions(max_streams=12, drain_grace_s=20.0), RayOptions(replicas=3, gpus_per_replica=0.5))
    assert s["num_replicas"] == 3 and "autoscaling_config" not in s
    assert s["max_ongoing_requests"] == 14 and s["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.5}
    assert s["graceful_shutdown_timeout_s"] > 20.0


def test_autoscaling_follows_open_streams():
    s = deployment_settings(ServerOptions(max_streams=16), RayOptions(autoscale=(1, 4)))
    a = s["autoscaling_config"]
    assert "num_replicas" not in s and (a["min_replicas"], a["max_replicas"]) == (1, 4)
    assert a["target_ongoing_requests"] == 12.0  # 3/4 of a replica's streams


def test_the_serve_config_keeps_scale_out_of_the_replicas_args():
    """A change of replicas alone must not change the app's args: Ray would replace every replica."""
    a = serve_config(ServerOptions(port=9000), RayOptions(replicas=2))
    b = serve_config(ServerOptions(port=9000), RayOptions(replicas=5))
    assert a["applications"][0]["args"] == b["applications"][0]["args"]
    assert a["applications"][0]["deployments"] != b["applications"][0]["deployments"]
    json.dumps(a)  # a plain JSON document, as `serve deploy` and KubeRay take it
    assert a["applications"][0]["import_path"] == "stream_s5.serve.ray_app:app_builder"


def test_each_ingress_sets_ray_serves_switches_and_a_local_ray_gets_free_haproxy_ports():
    hap = ingress_environment(RayOptions())  # haproxy is the default
    assert hap["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and hap["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    ports = [int(hap[k]) for k in HAPROXY_PORT_ENVS]
    assert len(set(ports)) == 3 and all(1024 <= p < 65536 for p in ports)
    # a stopping replica listens until the server's own drain is over (then uvicorn closes the rest)
    assert float(ingress_environment(RayOptions(), drain_grace_s=5.0)["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) > 5.0
    remote = ingress_environment(RayOptions(address="ray://head:10001"), local=False)
    assert not any(k in remote for k in HAPROXY_PORT_ENVS)  # a cluster keeps its own ports
    proxy = ingress_environment(RayOptions(ingress="proxy"))
    assert proxy["RAY_SERVE_ENABLE_HA_PROXY"] is None and proxy["RAY_SERVE_ENABLE_DIRECT_INGRESS"] is None
    assert proxy[PROXY_CALLBACK_ENV] == hap[PROXY_CALLBACK_ENV] == "stream_s5.serve.ray_app:proxy_middlewares"
    with pytest.raises(ValueError, match="--ingress"):
        RayOptions(ingress="nginx").check()


@pytest.mark.parametrize("argv, message", [
    (["serve", "--replicas", "2"], "need --ray"),
    (["serve", "--ingress", "proxy"], "need --ray"),
    (["serve", "--ray", "--ingress", "nginx"], "invalid choice"),
    (["serve", "--ray", "--port", "0"], "fixed --port"),
    (["serve", "--ray", "--autoscale", "3:2"], "MIN must be"),
    (["serve", "--ray", "--autoscale", "4"], "MIN:MAX"),
    (["serve", "--ray", "--replicas", "2", "--autoscale", "1:2"], "not allowed with"),
    (["serve", "--ray", "--host", "0.0.0.0"], "needs --token"),
])
def test_serve_ray_arguments_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_the_kuberay_manifest_holds_a_valid_serve_config_for_this_package(monkeypatch):
    from pathlib import Path

    yaml = pytest.importorskip("yaml")
    manifest = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "kuberay" / "rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService"
    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    [app] = config["applications"]
    assert app["import_path"] == "stream_s5.serve.ray_app:app_builder"
    server = ServerOptions(**{**app["args"]["server"], "allowed_origins": (), "token": "from-the-secret"})
    server.check()  # binding 0.0.0.0 is allowed with the secret's token
    [dep] = app["deployments"]
    assert dep["max_ongoing_requests"] == server.max_streams + RayOptions().spare_requests
    assert dep["graceful_shutdown_timeout_s"] > server.drain_grace_s
    envs = {e["name"] for e in manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "STREAM_S5_TOKEN"} <= envs
    schema = pytest.importorskip("ray.serve.schema")
    schema.ServeDeploySchema.model_validate(config)  # what KubeRay hands to Serve

    # the cluster runs the CLI's default ingress, whose replicas listen past the server's drain
    env = {e["name"]: e.get("value") for e in manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    local = ingress_environment(RayOptions(), local=False, drain_grace_s=server.drain_grace_s)
    for key in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"):
        assert env[key] == local[key], key
