"""Embedded CPU simulator: procedural indoor worlds, a diff-drive robot with a head camera,
R2R-format episodes with generated instructions, a NaVILA-action expert and its datasets.

Pure Python on MuJoCo (no rclpy); rendering is headless through EGL. Entry points:
`env.Simulator`, `episodes.generate_episodes` / `read_episodes`, `expert.run_expert`,
`dataset.load_dataset`, and the `nvila-sim` command line (`cli.main`). See docs/simulator.md.
"""
