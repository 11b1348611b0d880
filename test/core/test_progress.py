"""nvila_core.progress: a bar on a terminal, a bounded number of plain lines anywhere else."""

import io
import re
import subprocess
import sys

from nvila_core.progress import Progress, format_duration, stage_reporter, track

STATUS = re.compile(
    r"^rollout: (\d+)/100 ep \((\d+)%\), \d+:\d\d elapsed(, ~\d+:\d\d left)?, [\d.]+ ep/s"
)


class FakeClock:
    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += self.step


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(total, updates, step, **kwargs):
    stream, clock = io.StringIO(), FakeClock(step)
    with Progress(total, "rollout", "ep", stream=stream, clock=clock, **kwargs) as progress:
        for _ in range(updates):
            clock.tick()
            progress.update()
    return stream.getvalue()


def test_a_log_gets_one_line_per_ten_percent_without_carriage_returns():
    out = run(100, 100, step=0.5)  # 5 s per 10 %
    assert "\r" not in out
    lines = out.splitlines()
    assert lines[0] == "rollout: 0/100 ep"
    status = [STATUS.match(line) for line in lines[1:-1]]
    assert all(status), lines
    assert [int(m.group(2)) for m in status] == list(range(10, 101, 10))
    assert lines[-1] == "rollout: done, 100 ep in 0:50 (2.0 ep/s)"


def test_a_fast_loop_prints_only_its_first_and_last_line():
    out = run(100, 100, step=0.001)  # 0.1 s in all: under the minimum gap between lines
    assert out.splitlines() == ["rollout: 0/100 ep", "rollout: done, 100 ep in 0:00 (1000.0 ep/s)"]


def test_slow_progress_without_a_total_prints_every_interval():
    stream, clock = io.StringIO(), FakeClock(5.0)
    progress = Progress(None, "captions", "img", stream=stream, clock=clock, interval=30.0)
    for _ in range(30):  # 150 s
        clock.tick()
        progress.update()
    progress.set_postfix(loss=0.123456)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 + 5 + 1, lines
    assert lines[1] == "captions: 6 img, 0:30 elapsed, 0.2 img/s"
    assert lines[-1] == "captions: done, 30 img in 2:30 (0.2 img/s), loss=0.1235"


def test_an_unfinished_loop_says_how_far_it_got_and_resumed_counts_start_at_initial():
    out = run(100, 20, step=0.001, initial=50)
    assert out.splitlines()[0] == "rollout: 50/100 ep"
    assert out.splitlines()[-1].startswith("rollout: done, 70/100 ep in 0:00")


def test_a_terminal_gets_the_tqdm_bar():
    stream = Terminal()
    with Progress(10, "train", "step", stream=stream) as progress:
        progress.update(10)
    assert "\r" in stream.getvalue() and "10/10" in stream.getvalue()


def test_disabled_progress_prints_nothing():
    assert run(100, 100, step=1.0, disable=True) == ""


def test_track_counts_the_items_of_a_sized_iterable():
    stream = io.StringIO()
    assert list(track(range(5), "calibration", "query", stream=stream)) == [0, 1, 2, 3, 4]
    lines = stream.getvalue().splitlines()
    assert lines[0] == "calibration: 0/5 query"
    assert lines[-1].startswith("calibration: done, 5 query in ")


def test_a_subprocess_writing_to_a_pipe_prints_a_bounded_number_of_lines():
    code = (
        "import time\n"
        "from nvila_core.progress import track\n"
        "for _ in track(range(400), 'work', 'item', min_gap=0.0):\n"
        "    time.sleep(0.001)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert 2 <= len(lines) <= 12, lines  # start, one per 10 %, done
    assert lines[0] == "work: 0/400 item" and lines[-1].startswith("work: done, 400 item in ")


def test_stage_lines_and_durations():
    stream = io.StringIO()
    report = stage_reporter("nvila-core quantize", stream=stream)
    report("calibration: 16 queries")
    assert re.fullmatch(
        r"nvila-core quantize \[ +\d+\.\d s\] calibration: 16 queries\n", stream.getvalue()
    )
    assert format_duration(12.4) == "0:12" and format_duration(3725) == "1:02:05"
