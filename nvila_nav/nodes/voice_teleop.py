"""voice_teleop node: spoken (or typed) instructions for the navigator, offline by default.

A thin ROS 2 wrapper over `VoicePipeline` (nvila_nav/voice/pipeline.py: VAD, recognition, wake
phrase, stop words, confidence); docs/voice.md describes the pipeline and the audio formats.
Behaviour decisions:

- Audio comes from one source (`audio_source`): the microphone (sounddevice), the `audio` topic
  (std_msgs/Int16MultiArray or UInt8MultiArray PCM at `sample_rate`), or a WAV file played in
  real time (tests, demos); "none" leaves only the keyboard. A source thread or callback only
  queues audio; VAD and recognition run in one worker thread, never in a callback.
- An accepted instruction goes out on `instruction` (std_msgs/String), the text the navigator
  consumes. Every decision, accepted or not, goes out on `voice_teleop/transcript` as JSON (text,
  confidence, decision, reason, timings); rejected ones are also logged.
- A stop publishes `e_stop` true first (the motion controller zeroes the twist within its
  callback) and then calls the navigator's `navigator/stop` without waiting for the answer.
  The e-stop this node engaged is released (false) before its next instruction, when
  `release_estop_on_instruction` is true, and `motion_controller/resume` is called (a release
  alone does not restart motion); it never releases or resumes one it did not engage.
- The end-of-speech → zero-twist latency of each stop is measured on `cmd_vel` and logged.
- Typed lines (keyboard fallback) are instructions without a wake phrase; "stop" stops.
- A source that cannot open (no microphone, no PortAudio, a missing WAV) fails construction with
  one ValueError naming `audio_source` and the alternatives (file, topic, none);
  `check_audio_source` runs the same checks before a graph starts.
- An instruction published while nobody listens on `instruction` is logged as lost (the
  navigator subscribes from construction on and keeps one that arrives while it loads).
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Bool, Int16MultiArray, String, UInt8MultiArray
from std_srvs.srv import Trigger

from nvila_nav.nodes.parameters import ParameterSpec, declare_all
from nvila_nav.nodes.process import ShutdownRequest, spin_in_background, stop_executor
from nvila_nav.voice.audio import (
    SAMPLE_FORMATS,
    MicrophoneSource,
    Resampler,
    WavFileSource,
    pcm_to_float,
)
from nvila_nav.voice.keyboard import HELP, KeyboardReader
from nvila_nav.voice.language import DEFAULT_WAKE_PHRASE
from nvila_nav.voice.pipeline import (
    CommandInterpreter,
    Heard,
    PipelineConfig,
    VoicePipeline,
)
from nvila_nav.voice.recognizers import (
    BACKENDS,
    CALIBRATED_MIN_CONFIDENCE,
    DEFAULT_BACKEND,
    LANGUAGE_MODELS,
    Transcript,
    make_recognizer,
)
from nvila_nav.voice.stopword import Denoiser, StopDetector
from nvila_nav.voice.text import normalize
from nvila_nav.voice.vad import SegmenterConfig, SileroVad, SpeechSegmenter

_RESTART = "Read at start-up."
_DEFAULTS = PipelineConfig()
_VAD = SegmenterConfig()

PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "audio_source",
        "microphone",
        f"Where speech comes from: microphone, topic (audio), file (audio_file) or none "
        f"(keyboard only). {_RESTART}",
        read_only=True,
        choices=("microphone", "topic", "file", "none"),
    ),
    ParameterSpec(
        "audio_file", "", f"WAV file played when audio_source is file. {_RESTART}", read_only=True
    ),
    ParameterSpec(
        "file_realtime",
        True,
        f"Play the WAV file at real-time pace (false: as fast as it is processed). {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "audio_msg_type",
        "int16",
        "Message on the audio topic: int16 (std_msgs/Int16MultiArray, one sample per element) "
        f"or uint8 (std_msgs/UInt8MultiArray, bytes in sample_format). {_RESTART}",
        read_only=True,
        choices=("int16", "uint8"),
    ),
    ParameterSpec(
        "sample_format",
        "s16le",
        f"Bytes of a UInt8MultiArray audio message: s16le, u8, s8 or f32le. {_RESTART}",
        read_only=True,
        choices=SAMPLE_FORMATS,
    ),
    ParameterSpec(
        "sample_rate",
        16000,
        f"Sample rate of the audio topic and the microphone [Hz]; resampled to 16 kHz. {_RESTART}",
        read_only=True,
        min_value=8000,
        max_value=192000,
    ),
    ParameterSpec(
        "channels",
        1,
        f"Interleaved channels on the audio topic (averaged to mono). {_RESTART}",
        read_only=True,
        min_value=1,
        max_value=32,
    ),
    ParameterSpec(
        "microphone_device",
        "",
        f"sounddevice input device (name or index); empty: the default. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "backend",
        DEFAULT_BACKEND,
        "Speech recogniser: faster_whisper (Whisper tiny.en installed with the package, or "
        "model_path), pocketsphinx (light, navigation language model) or whisper (needs "
        f"model_path). Nothing is downloaded. {_RESTART}",
        read_only=True,
        choices=BACKENDS,
    ),
    ParameterSpec(
        "model_path",
        "",
        "Local Whisper model: a CTranslate2 directory (faster_whisper; empty: the bundled "
        "tiny.en) or a Hugging Face safetensors directory (whisper). Never downloaded. "
        f"{_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "device", "cpu", f"Whisper backends: cpu, cuda, cuda:1, ... {_RESTART}", read_only=True
    ),
    ParameterSpec(
        "language_model",
        "navigation",
        "pocketsphinx: navigation (n-gram of simulator instructions and commands) or grammar "
        f"(the JSGF command grammar only). {_RESTART}",
        read_only=True,
        choices=LANGUAGE_MODELS,
    ),
    ParameterSpec(
        "wake_phrase",
        DEFAULT_WAKE_PHRASE,
        f"Said before every instruction (not before stop); words must be in CMUdict. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "require_wake_phrase",
        True,
        f"false: every utterance is an instruction (a quiet room with one user). {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "wake_tolerance",
        0.25,
        "How loosely the wake phrase matches: letter edit distance over its length "
        f"(0: exact words). {_RESTART}",
        read_only=True,
        min_value=0.0,
        max_value=0.5,
    ),
    ParameterSpec(
        "min_confidence",
        -1.0,
        "Instructions with a lower transcript confidence are logged, not sent; -1: the "
        f"backend's calibrated threshold (docs/voice.md). {_RESTART}",
        read_only=True,
        min_value=-1.0,
        max_value=1.0,
    ),
    ParameterSpec(
        "stop_min_confidence",
        _DEFAULTS.stop_min_confidence,
        "Confidence a stop needs when the recogniser's transcript is a stop phrase (the stop "
        f"detector needs none). {_RESTART}",
        read_only=True,
        min_value=0.0,
        max_value=1.0,
    ),
    ParameterSpec(
        "stop_detector",
        True,
        "Run the dedicated stop detector on every short speech segment (stop, halt, freeze, "
        f"emergency stop at the first pause). {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "instruction_end_silence_s",
        _DEFAULTS.instruction_end_silence_s,
        "Silence that ends an instruction begun with the wake phrase; speech resuming earlier "
        f"continues it (sentence pauses) [s]. {_RESTART}",
        read_only=True,
        min_value=0.0,
        max_value=10.0,
    ),
    ParameterSpec(
        "fallback_below",
        CALIBRATED_MIN_CONFIDENCE["pocketsphinx"],
        "pocketsphinx: decode again with the general English model (free form) when the "
        f"confidence is below this; 0 disables. {_RESTART}",
        read_only=True,
        min_value=0.0,
        max_value=1.0,
    ),
    ParameterSpec(
        "vad_threshold",
        _VAD.threshold,
        f"silero-vad speech probability that starts an utterance. {_RESTART}",
        read_only=True,
        min_value=0.05,
        max_value=0.95,
    ),
    ParameterSpec(
        "min_speech_ms",
        _VAD.min_speech_ms,
        f"Shorter sounds are dropped [ms]. {_RESTART}",
        read_only=True,
        min_value=0,
        max_value=5000,
    ),
    ParameterSpec(
        "end_silence_ms",
        _VAD.end_silence_ms,
        f"Silence that ends an utterance [ms]. {_RESTART}",
        read_only=True,
        min_value=100,
        max_value=5000,
    ),
    ParameterSpec(
        "stop_pause_ms",
        _VAD.pause_ms,
        f"Silence after a short utterance at which it is checked for stop [ms]. {_RESTART}",
        read_only=True,
        min_value=32,
        max_value=5000,
    ),
    ParameterSpec(
        "stop_max_speech_s",
        _DEFAULTS.stop_max_speech_s,
        f"Only utterances up to this long are checked for stop at a pause [s]. {_RESTART}",
        read_only=True,
        min_value=0.0,
        max_value=10.0,
    ),
    ParameterSpec(
        "max_utterance_s",
        _VAD.max_utterance_s,
        f"An utterance is cut and decoded after this long [s]. {_RESTART}",
        read_only=True,
        min_value=1.0,
        max_value=120.0,
    ),
    ParameterSpec(
        "keyboard",
        "auto",
        "Read typed instructions from the terminal: enabled, disabled, or auto (when stdin is "
        f"a terminal). {_RESTART}",
        read_only=True,
        choices=("auto", "enabled", "disabled"),
    ),
    ParameterSpec(
        "release_estop_on_instruction",
        True,
        f"Release the e-stop this node engaged before sending its next instruction. {_RESTART}",
        read_only=True,
    ),
    ParameterSpec(
        "cmd_vel_stamped",
        False,
        "cmd_vel is TwistStamped (motion_controller use_stamped); only for measuring stop "
        "latency. nvila-nav-bringup sets it to the controller's; a node that finds cmd_vel "
        f"published with the other type follows it with a warning. {_RESTART}",
        read_only=True,
    ),
)


_CMD_VEL_CHECK_S = 2.0
"""How often the type of cmd_vel's publishers is compared with cmd_vel_stamped [wall s]."""


def _type_name(msg_type: Any) -> str:
    return f"geometry_msgs/msg/{msg_type.__name__}"


_SOURCE_HINT = (
    "set the voice_teleop parameter audio_source to file (with audio_file: a WAV), topic (PCM "
    "on the audio topic, docs/voice.md) or none (keyboard only); ros2 launch / "
    "nvila-nav-bringup voice: audio_source:=file audio_file:=speech.wav"
)


def check_audio_source(params: dict[str, Any]) -> None:
    """Whether the configured audio source can open, without opening it; ValueError naming
    audio_source and the alternatives when not (e.g. a machine without a microphone)."""
    source = params.get("audio_source", "microphone")
    if source == "file":
        path = params.get("audio_file", "")
        if not path or not Path(path).is_file():
            raise ValueError(f"audio_source is file but audio_file {path!r} does not exist")
    elif source == "microphone":
        device = str(params.get("microphone_device", ""))
        try:
            import sounddevice

            sounddevice.query_devices(
                (int(device) if device.isdigit() else device) or None, "input"
            )
        except Exception as error:  # ImportError, OSError (no PortAudio), PortAudioError
            raise ValueError(
                f"audio_source is microphone but no microphone {device or '(default)'} can be "
                f"opened ({type(error).__name__}: {error}); {_SOURCE_HINT}"
            ) from None


def default_parameters() -> dict[str, Any]:
    """Every parameter at its default (config/voice_teleop.yaml holds the same values)."""
    return {spec.name: spec.default for spec in PARAMETERS}


def build_pipeline(
    params: dict[str, Any], previous: VoicePipeline | None = None
) -> tuple[VoicePipeline, CommandInterpreter]:
    """The voice pipeline the parameters describe; `previous` lends its recogniser and stop
    detector (slow to build) to a fresh VAD state (the benchmark, one utterance at a time)."""
    interpreter = CommandInterpreter(
        params["wake_phrase"], params["require_wake_phrase"], params["wake_tolerance"]
    )
    if previous is not None:
        previous.close()
        recognizer, stop_detector = previous.recognizer, previous.stop_detector
    else:
        recognizer = make_recognizer(
            params["backend"],
            params["model_path"],
            params["language_model"],
            params["wake_phrase"],
            params["fallback_below"],
            params["device"],
        )
        stop_detector = StopDetector(params["wake_phrase"]) if params["stop_detector"] else None
    segmenter = SpeechSegmenter(
        SileroVad(),
        SegmenterConfig(
            threshold=params["vad_threshold"],
            min_speech_ms=params["min_speech_ms"],
            end_silence_ms=params["end_silence_ms"],
            pause_ms=params["stop_pause_ms"],
            max_utterance_s=params["max_utterance_s"],
        ),
    )
    min_confidence = params["min_confidence"]
    if min_confidence < 0:
        min_confidence = CALIBRATED_MIN_CONFIDENCE[params["backend"]]
    config = PipelineConfig(
        min_confidence=min_confidence,
        stop_min_confidence=params["stop_min_confidence"],
        stop_max_speech_s=params["stop_max_speech_s"],
        instruction_end_silence_s=params["instruction_end_silence_s"],
    )
    pipeline = VoicePipeline(segmenter, recognizer, interpreter, config, stop_detector, Denoiser())
    return pipeline, interpreter


class VoiceTeleopNode(Node):
    """Speech and keyboard in; instruction, transcript, e-stop and navigator/stop out."""

    def __init__(self, node_name: str = "voice_teleop", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        # Set first: destroy_node() must work on a node whose construction failed.
        self._closing = threading.Event()
        self._worker: threading.Thread | None = None
        self.source: Any = None
        params = declare_all(self, PARAMETERS)
        check_audio_source(params)  # before the recogniser loads
        self._release_estop = params["release_estop_on_instruction"]
        self.pipeline, self._interpreter = build_pipeline(params)
        recognizer = self.pipeline.recognizer

        self._lock = threading.Lock()
        self._estop_engaged = False
        self._stop_spoken_at: float | None = None
        self.stop_latencies_s: list[float] = []
        """End of speech → first zero twist on cmd_vel, per stop (for tests and the log)."""
        self.audio_done = threading.Event()
        """Set when a WAV file has been played and everything in it decided."""

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._instruction_pub = self.create_publisher(String, "instruction", reliable)
        self._transcript_pub = self.create_publisher(String, "voice_teleop/transcript", reliable)
        self._estop_pub = self.create_publisher(Bool, "e_stop", latched)
        self._stop_client = self.create_client(Trigger, "navigator/stop")
        self._resume_client = self.create_client(Trigger, "motion_controller/resume")
        self._cmd_vel_type = TwistStamped if params["cmd_vel_stamped"] else Twist
        self._cmd_vel_sub = self.create_subscription(
            self._cmd_vel_type, "cmd_vel", self._on_cmd_vel, reliable
        )
        self.create_timer(
            _CMD_VEL_CHECK_S,
            self._follow_cmd_vel_type,
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )

        self._audio: queue.Queue[tuple[np.ndarray, float] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="voice-worker", daemon=True)
        self._worker.start()
        self.source = self._open_source(params)

        keyboard = params["keyboard"]
        if keyboard == "enabled" or (keyboard == "auto" and sys.stdin.isatty()):
            KeyboardReader(self._on_typed).start(HELP.format(wake=params["wake_phrase"]))
        self.get_logger().info(
            f"voice teleop ready: {params['audio_source']} → {recognizer.name}"
            f" ({params['language_model']}), wake phrase {params['wake_phrase']!r}"
        )

    def _open_source(self, params: dict[str, Any]) -> Any:
        kind = params["audio_source"]
        if kind == "file":
            source = WavFileSource(
                params["audio_file"],
                self._queue_audio,
                on_end=lambda: self._audio.put(None),
                realtime=params["file_realtime"],
            )
        elif kind == "microphone":
            try:
                source = MicrophoneSource(
                    self._queue_audio, params["microphone_device"], params["sample_rate"]
                )
            except RuntimeError as error:
                raise ValueError(f"audio_source is microphone: {error}; {_SOURCE_HINT}") from None
        elif kind == "topic":
            self._resample = Resampler(params["sample_rate"])
            self._channels = params["channels"]
            self._sample_format = params["sample_format"]
            int16 = params["audio_msg_type"] == "int16"
            qos = QoSProfile(
                depth=100,
                reliability=qos_profile_sensor_data.reliability,
                durability=qos_profile_sensor_data.durability,
            )
            self.create_subscription(
                Int16MultiArray if int16 else UInt8MultiArray, "audio", self._on_audio_msg, qos
            )
            return None
        else:
            return None
        source.start()
        return source

    def destroy_node(self) -> None:
        self._closing.set()
        if self.source is not None:
            self.source.close()
        if self._worker is not None:
            self._audio.put(None)
            self._worker.join(timeout=5.0)
        if getattr(self, "pipeline", None) is not None:
            self.pipeline.close()
        super().destroy_node()

    # --- audio in -----------------------------------------------------------------------------

    def _queue_audio(self, samples: np.ndarray, arrival_s: float) -> None:
        self._audio.put((samples, arrival_s))

    def _on_audio_msg(self, msg: Int16MultiArray | UInt8MultiArray) -> None:
        arrival = time.monotonic()
        try:
            if isinstance(msg, Int16MultiArray):
                raw = np.asarray(msg.data, dtype=np.int16).tobytes()
                samples = pcm_to_float(raw, "s16le", self._channels)
            else:
                samples = pcm_to_float(bytes(msg.data), self._sample_format, self._channels)
            self._queue_audio(self._resample(samples), arrival)
        except Exception as error:
            self.get_logger().error(f"audio message dropped: {error}")

    def _work(self) -> None:
        """VAD and recognition, one chunk at a time; a None marks the end of a file."""
        while not self._closing.is_set():
            item = self._audio.get()
            try:
                if item is None:
                    for heard in self.pipeline.flush():
                        self._act(heard, time.monotonic())
                    self.audio_done.set()
                    continue
                samples, arrival = item
                for heard in self.pipeline.feed(samples):
                    self._act(heard, arrival)
            except Exception:
                self.get_logger().error(f"voice pipeline failed:\n{traceback.format_exc()}")

    # --- decisions out ------------------------------------------------------------------------

    def _act(self, heard: Heard, arrival_s: float) -> None:
        end_of_speech = arrival_s - heard.silence_s
        if heard.kind == "stop":
            self._stop(end_of_speech)
        elif heard.kind == "instruction":
            self._instruct(heard.instruction)
        else:
            self.get_logger().info(
                f"not sent: {heard.transcript.text!r} ({heard.reason}, confidence "
                f"{heard.transcript.confidence:.2f})"
            )
        decided_ms = (time.monotonic() - end_of_speech) * 1000.0
        self._publish_transcript(
            heard.transcript,
            heard.kind,
            source="voice",
            instruction=heard.instruction,
            command=heard.command,
            reason=heard.reason,
            early=heard.early,
            speech_s=round(heard.speech_s, 3),
            decode_ms=round(heard.decode_s * 1000.0, 1),
            end_of_speech_to_decision_ms=round(decided_ms, 1),
        )

    def _on_typed(self, line: str) -> None:
        words = tuple(normalize(line).split())
        transcript = Transcript(words, 1.0, "keyboard")
        if self._interpreter.is_stop(words):
            self._stop(time.monotonic())
            self._publish_transcript(transcript, "stop", source="keyboard")
            return
        self._instruct(line)
        self._publish_transcript(transcript, "instruction", source="keyboard", instruction=line)

    def _stop(self, end_of_speech_s: float) -> None:
        with self._lock:
            self._estop_engaged = True
            self._stop_spoken_at = end_of_speech_s
        self._estop_pub.publish(Bool(data=True))
        if self._stop_client.service_is_ready():
            self._stop_client.call_async(Trigger.Request())
        else:
            self.get_logger().warning("navigator/stop is not available; e-stop published")
        self.get_logger().warning("stop: e-stop engaged, navigator/stop called")

    def _instruct(self, text: str) -> None:
        with self._lock:
            release = self._estop_engaged and self._release_estop
            self._estop_engaged = self._estop_engaged and not release
        if release:
            self._estop_pub.publish(Bool(data=False))
            # Reset is not restart: the motion controller waits for an explicit resume after a
            # release. The speaker asked for this instruction, so resume the stop they spoke
            # (the instruction alone may reach the controller before the release does).
            if self._resume_client.service_is_ready():
                self._resume_client.call_async(Trigger.Request())
            self.get_logger().info("e-stop released and motion resumed for a new instruction")
        self._instruction_pub.publish(String(data=text))
        if self._instruction_pub.get_subscription_count() == 0:
            self.get_logger().error(
                f"instruction {text!r} published, but nothing subscribes to instruction "
                "(no navigator running?): it is lost"
            )
        else:
            self.get_logger().info(f"instruction: {text!r}")

    def _publish_transcript(self, transcript: Transcript, decision: str, **extra: Any) -> None:
        record = {
            "text": transcript.text,
            "confidence": round(transcript.confidence, 3),
            "search": transcript.search,
            "decision": decision,
            **extra,
        }
        self._transcript_pub.publish(String(data=json.dumps(record)))

    def _follow_cmd_vel_type(self) -> None:
        """cmd_vel_stamped must match the motion controller's use_stamped; when every publisher
        on cmd_vel uses the other type, subscribe to that one instead and say so."""
        try:
            topic = self._cmd_vel_sub.topic_name
            types = {info.topic_type for info in self.get_publishers_info_by_topic(topic)}
        except Exception:  # going away
            return
        other = Twist if self._cmd_vel_type is TwistStamped else TwistStamped
        if not types or _type_name(self._cmd_vel_type) in types:
            return
        if _type_name(other) not in types:
            return
        self.destroy_subscription(self._cmd_vel_sub)
        self._cmd_vel_type = other
        self._cmd_vel_sub = self.create_subscription(
            other,
            "cmd_vel",
            self._on_cmd_vel,
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.get_logger().warning(
            f"{topic} carries {_type_name(other)}, not what cmd_vel_stamped says: following "
            f"it (set voice_teleop cmd_vel_stamped: {str(other is TwistStamped).lower()} to "
            "match motion_controller use_stamped)"
        )

    def _on_cmd_vel(self, msg: Twist | TwistStamped) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        if twist.linear.x or twist.linear.y or twist.angular.z:
            return
        with self._lock:
            spoken_at, self._stop_spoken_at = self._stop_spoken_at, None
        if spoken_at is not None:
            latency = time.monotonic() - spoken_at
            self.stop_latencies_s.append(latency)
            self.get_logger().info(f"stop: end of speech → zero twist {latency * 1000.0:.0f} ms")


def main(args: list[str] | None = None) -> None:
    # SIGINT and SIGTERM end the process cleanly within 2 s (nvila_nav/nodes/process.py).
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    request = ShutdownRequest("voice_teleop").install()
    node = None
    executor = None
    thread = None
    code = 0
    try:
        try:
            node = VoiceTeleopNode()
        except ValueError as error:  # a configuration error: one line, no traceback
            rclpy.logging.get_logger("voice_teleop").fatal(str(error))
            code = 2
            return
        request.running()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        thread = spin_in_background(executor, "voice-executor")
        request.wait(thread)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if executor is not None:
            stop_executor(executor, thread)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        request.finish(code)


if __name__ == "__main__":
    main()
