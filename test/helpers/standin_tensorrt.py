"""A stand-in for the `tensorrt` runtime API (TensorRT 10), backed by onnxruntime on the CPU.

Exactly what `nvila_core.export.build_engine.EngineSession` calls: `Logger`, `Runtime`,
`deserialize_cuda_engine`, the engine's I/O tensor queries, and an execution context with
`set_input_shape`, `set_tensor_address`, `get_tensor_shape` and `execute_async_v3`. A "plan" is
the path of an ONNX file (what `nvila-core build-engine` would have compiled). Like TensorRT, the
context reads its inputs from and writes its outputs to raw addresses, here of host memory (torch
CPU tensors), so a wrong address, shape, dtype or missing binding shows up as wrong numbers.
"""

import ctypes

import numpy as np
import onnxruntime as ort

ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class Logger:
    WARNING = 2

    def __init__(self, severity):
        self.severity = severity


class TensorIOMode:
    INPUT = "input"
    OUTPUT = "output"


def nptype(dtype):
    return np.dtype(dtype).type


class Runtime:
    def __init__(self, logger):
        self.logger = logger

    def deserialize_cuda_engine(self, plan: bytes):
        return Engine(plan.decode())


class Engine:
    def __init__(self, onnx_path: str):
        self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        self.io = {i.name: (TensorIOMode.INPUT, i.type) for i in self.session.get_inputs()}
        self.io |= {o.name: (TensorIOMode.OUTPUT, o.type) for o in self.session.get_outputs()}
        self.names = list(self.io)
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return self.io[name][0]

    def get_tensor_dtype(self, name: str):
        return ORT_TYPES[self.io[name][1]]

    def create_execution_context(self):
        return ExecutionContext(self)


class ExecutionContext:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.results: dict[str, np.ndarray] | None = None

    def set_input_shape(self, name: str, shape) -> bool:
        assert self.engine.get_tensor_mode(name) == TensorIOMode.INPUT, name
        self.shapes[name] = tuple(int(d) for d in shape)
        self.results = None
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        if self.engine.get_tensor_mode(name) == TensorIOMode.INPUT:
            self.results = None
        return True

    def _read(self, name: str) -> np.ndarray:
        shape = self.shapes[name]
        dtype = np.dtype(self.engine.get_tensor_dtype(name))
        count = int(np.prod(shape))
        if count == 0:
            return np.zeros(shape, dtype)
        raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(self.addresses[name])
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def _run(self) -> dict[str, np.ndarray]:
        if self.results is None:
            inputs = [n for n in self.engine.names if self.get_mode(n) == TensorIOMode.INPUT]
            feed = {name: self._read(name) for name in inputs}
            outputs = [n for n in self.engine.names if self.get_mode(n) == TensorIOMode.OUTPUT]
            self.results = dict(zip(outputs, self.engine.session.run(outputs, feed), strict=True))
        return self.results

    def get_mode(self, name: str) -> str:
        return self.engine.get_tensor_mode(name)

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if self.get_mode(name) == TensorIOMode.INPUT:
            return self.shapes[name]
        return self._run()[name].shape

    def execute_async_v3(self, stream: int) -> bool:
        for name, value in self._run().items():
            if name in self.addresses:
                data = np.ascontiguousarray(value)
                ctypes.memmove(self.addresses[name], data.ctypes.data, data.nbytes)
        return True
