"""`make soak` / `python -m nvila_nav.faults.soak`: the navigation graph under a long steady load,
with memory and latency recorded over time. Loopback only; not part of `make test`.

The navigator (on `models/navila-nano` by default) and the motion controller run as separate
processes; a `ScriptedRobot` sends a 30 Hz 1080p camera, odometry and a base, a new instruction
every `--instruction-period` seconds and an e-stop pulse (true for 1 s, then false and
`motion_controller/resume`) every `--estop-period` seconds, from publishers of each QoS in turn.
Every second it samples both processes' RSS and the camera rate. Measured per event: e-stop →
zero twist (a pulse is missed when no zero arrives within 0.2 s), instruction → first motion,
and the navigator's model latency from its status; at the end, the camera as the navigator
received it (frames, arrival gaps and stamp-to-callback delays from its status) and the stops
for camera loss. Every process (robot, navigator, controller) uses the Fast DDS profile
`--dds-profile` (config/fastdds_large_frames.xml by default; an empty value keeps the
environment's). Written: `<out>/soak.json` and `<out>/soak.png` (memory and latencies over time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from nvila_nav.faults.robot import ScriptedRobot
from nvila_nav.faults.suite import loopback_env, node_process, wait_for

INSTRUCTIONS = (
    "Walk down the hallway and stop at the door.",
    "Turn left and go to the kitchen.",
    "Go past the sofa and wait by the plant.",
    "Turn around and walk to the bedroom.",
)
MISSED_ESTOP_S = 0.2


def run(args: argparse.Namespace) -> dict:
    from nvila_nav.nodes.bringup import config_dir

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = loopback_env(args.domain_id)
    if args.dds_profile is None:
        args.dds_profile = str(config_dir() / "fastdds_large_frames.xml")
    if args.dds_profile:  # Fast DDS 3 and 2 read one each; this process's robot too
        for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
            env[name] = os.environ[name] = str(Path(args.dds_profile).resolve())
    navigator_args = ["-p", f"policy:={args.policy}"]
    if args.policy == "nvila":
        navigator_args += ["-p", f"model:={args.model}", "-p", "device:=cpu"]
    navigator = node_process("soak-navigator", "navigator", env, out, navigator_args)
    controller = node_process("soak-motion_controller", "motion_controller", env, out)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=args.domain_id)
    width, height = args.camera
    robot = ScriptedRobot(context, camera_size=(width, height), camera_rate_hz=args.camera_rate)
    resume = robot.create_client(Trigger, "motion_controller/resume")
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(robot)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    samples, estops, instructions = [], [], []
    try:
        controller.start()
        navigator.start()
        up = wait_for(
            lambda: (
                robot.last_status()[0].get("active") == "true"
                and robot.action_pub.get_subscription_count() > 0
            ),
            180.0,
        )
        if not up:
            raise RuntimeError(f"the graph did not come up; logs in {out}")
        start = time.monotonic()
        end = start + args.minutes * 60.0
        next_instruction = start
        next_estop = start + args.estop_period
        next_sample = start
        frames = first_frame = robot.camera_frames
        publishers = list(robot.estop_pubs.items())
        count = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                sent = robot.camera_frames
                values = robot.last_status()[0]
                samples.append(
                    {
                        "t": now - start,
                        "navigator_rss_mb": navigator.rss_mb(),
                        "controller_rss_mb": controller.rss_mb(),
                        "camera_hz": sent - frames,
                        "model_latency_ms": _number(values.get("last_latency_ms")),
                    }
                )
                frames = sent
                next_sample += 1.0
            if now >= next_instruction:
                text = INSTRUCTIONS[len(instructions) % len(INSTRUCTIONS)]
                robot.instruction_pub.publish(String(data=text))
                instructions.append({"t": now - start, "sent": now, "first_motion_s": None})
                next_instruction += args.instruction_period
            if now >= next_estop:
                name, publisher = publishers[count % len(publishers)]
                count += 1
                t = time.monotonic()
                publisher.publish(Bool(data=True))
                wait_for(lambda t=t: robot.first_zero(t) is not None, 1.0)
                zero = robot.first_zero(t)
                latency = None if zero is None else zero.t - t
                time.sleep(1.0)
                moved = any(not c.zero for c in robot.commands_since(t + (latency or 0.0)))
                publisher.publish(Bool(data=False))
                time.sleep(0.2)
                if resume.wait_for_service(timeout_sec=1.0):
                    resume.call_async(Trigger.Request())
                estops.append(
                    {
                        "t": t - start,
                        "publisher": name,
                        "zero_s": latency,
                        "moved_while_stopped": moved,
                        "missed": latency is None or latency > MISSED_ESTOP_S or moved,
                    }
                )
                next_estop += args.estop_period
            time.sleep(0.02)
        camera = {
            "sent": robot.camera_frames - first_frame,
            **{
                key: value
                for key, value in robot.last_status()[0].items()
                if key.startswith("camera_")
            },
        }
        for record in instructions:  # first non-zero command after each instruction
            first = next((c for c in robot.commands_since(record["sent"]) if not c.zero), None)
            if first is not None and first.t - record["sent"] < args.instruction_period:
                record["first_motion_s"] = first.t - record["sent"]
            del record["sent"]
    finally:
        navigator.stop()
        controller.stop()
        robot.close()
        executor.shutdown(timeout_sec=2.0)
        spin.join(timeout=2.0)
        robot.destroy_node()
        rclpy.try_shutdown(context=context)
    log = navigator.log_path.read_text(errors="replace")
    summary = summarize(samples, estops, instructions, args)
    summary["dds_profile"] = args.dds_profile or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
    summary["camera_loss_stops"] = log.count("(camera lost:")
    summary["camera_loss_gaps_s"] = _loss_gaps(log)
    summary["navigator_camera"] = camera
    return summary


def _loss_gaps(log: str) -> dict:
    """Percentiles of the silences that stopped the robot ("no camera frame for 0.32 s")."""
    gaps = sorted(
        float(g) for g in re.findall(r"camera lost: no camera frame for ([0-9.]+) s", log)
    )
    if not gaps:
        return {}
    return {f"p{q}": gaps[min(len(gaps) - 1, len(gaps) * q // 100)] for q in (50, 90, 99)} | {
        "max": gaps[-1]
    }


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "none") else None
    except ValueError:
        return None


def summarize(samples: list, estops: list, instructions: list, args) -> dict:
    warm = [s for s in samples if s["t"] >= args.warmup * 60.0 * args.minutes]
    rss = [s["navigator_rss_mb"] for s in warm]
    third = max(len(rss) // 3, 1)
    growth = (sum(rss[-third:]) / third - sum(rss[:third]) / third) if rss else None
    zeros = [e["zero_s"] for e in estops if e["zero_s"] is not None]
    motions = [i["first_motion_s"] for i in instructions if i["first_motion_s"] is not None]
    return {
        "minutes": args.minutes,
        "policy": args.policy,
        "camera": f"{args.camera[0]}x{args.camera[1]} at {args.camera_rate:g} Hz",
        "camera_hz_mean": sum(s["camera_hz"] for s in samples) / max(len(samples), 1),
        "navigator_rss_mb": {
            "start": samples[0]["navigator_rss_mb"] if samples else None,
            "after_warmup": rss[0] if rss else None,
            "end": samples[-1]["navigator_rss_mb"] if samples else None,
            "max": max((s["navigator_rss_mb"] for s in samples), default=None),
            "growth_after_warmup_mb": growth,
        },
        "estop_pulses": len(estops),
        "estops_missed": sum(e["missed"] for e in estops),
        "estop_zero_s_max": max(zeros, default=None),
        "instructions": len(instructions),
        "instruction_to_motion_s_median": sorted(motions)[len(motions) // 2] if motions else None,
        "samples": samples,
        "estops": estops,
        "instruction_events": instructions,
    }


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = summary["samples"]
    minutes = [s["t"] / 60.0 for s in samples]
    fig, (memory, latency) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    memory.plot(minutes, [s["navigator_rss_mb"] for s in samples], label="navigator RSS")
    memory.plot(minutes, [s["controller_rss_mb"] for s in samples], label="motion_controller RSS")
    memory.set_ylabel("MB")
    memory.set_title(
        f"soak: {summary['camera']}, {summary['policy']} policy, {summary['instructions']} "
        f"instructions, {summary['estop_pulses']} e-stop pulses "
        f"({summary['estops_missed']} missed)"
    )
    memory.legend(loc="lower right")
    memory.grid(alpha=0.3)
    model = [(s["t"] / 60.0, s["model_latency_ms"]) for s in samples if s["model_latency_ms"]]
    if model:
        latency.plot(*zip(*model, strict=True), ".", markersize=3, label="model query (ms)")
    estops = [(e["t"] / 60.0, e["zero_s"] * 1000.0) for e in summary["estops"] if e["zero_s"]]
    if estops:
        latency.plot(*zip(*estops, strict=True), "rv", label="e-stop → zero twist (ms)")
    motions = [
        (i["t"] / 60.0, i["first_motion_s"] * 1000.0)
        for i in summary["instruction_events"]
        if i["first_motion_s"] is not None
    ]
    if motions:
        latency.plot(
            *zip(*motions, strict=True), "g^", markersize=4, label="instruction → motion (ms)"
        )
    latency.set_yscale("log")
    latency.set_ylabel("ms")
    latency.set_xlabel("minutes")
    latency.legend(loc="upper right")
    latency.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nvila_nav.faults.soak",
        description="Run the navigation graph under a steady camera, instruction and e-stop load "
        "and record memory and latency over time (loopback only).",
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--camera", type=lambda s: tuple(int(v) for v in s.split("x")), default=(1920, 1080)
    )
    parser.add_argument("--camera-rate", type=float, default=30.0)
    parser.add_argument("--instruction-period", type=float, default=5.0)
    parser.add_argument("--estop-period", type=float, default=20.0)
    parser.add_argument("--policy", choices=("nvila", "forward"), default="nvila")
    parser.add_argument("--model", default="models/navila-nano")
    parser.add_argument(
        "--warmup", type=float, default=0.2, help="fraction of the run left out of growth"
    )
    parser.add_argument(
        "--dds-profile",
        default=None,
        help="Fast DDS XML profile of every process (default: config/fastdds_large_frames.xml; "
        "'' keeps the environment's)",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/faults/soak"))
    parser.add_argument("--domain-id", type=int, default=1 + os.getpid() % 100)
    args = parser.parse_args(argv)
    if args.policy == "nvila" and not Path(args.model).is_dir():
        parser.error(f"--model {args.model} is not a checkpoint folder (or use --policy forward)")
    summary = run(args)
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2))
    plot(summary, args.out / "soak.png")
    rss = summary["navigator_rss_mb"]
    print(
        f"soak {args.minutes:g} min: camera {summary['camera_hz_mean']:.1f} Hz sent; navigator "
        f"RSS {rss['start']:.0f} -> {rss['end']:.0f} MB (max {rss['max']:.0f}, "
        f"{rss['growth_after_warmup_mb']:+.1f} MB after warm-up); e-stop pulses "
        f"{summary['estop_pulses']}, missed {summary['estops_missed']}, slowest zero twist "
        f"{summary['estop_zero_s_max']}; {summary['instructions']} instructions, median "
        f"instruction -> motion {summary['instruction_to_motion_s_median']} s; "
        f"{summary['camera_loss_stops']} stops for camera frames late by more than "
        f"camera_loss_timeout_s; navigator camera: {summary['navigator_camera']}; "
        f"{args.out / 'soak.png'}"
    )
    return 1 if summary["estops_missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
