"""Codecs that misbehave on purpose, for the runner's tests (imported as codecs_for_tests:Class)."""

import os
import time

import numpy as np

from benchmark.codecs.codec import Codec


class Raw(Codec):
    """Lossless: raw pixels with a 4-byte size header. An honest reference."""

    name = "raw"
    rate_parameter = "level"
    default_sweep = (1, 2)
    defaults = {"sleep": 0.0}

    def encode(self, image, setting):
        time.sleep(self.options["sleep"])
        h, w = image.shape[:2]
        return h.to_bytes(2, "big") + w.to_bytes(2, "big") + image.tobytes()

    def decode(self, data):
        h, w = int.from_bytes(data[:2], "big"), int.from_bytes(data[2:4], "big")
        return np.frombuffer(data[4:], np.uint8).reshape(h, w, 3).copy()


class Smuggler(Codec):
    """Cheats: sends 1 byte and keeps the image on self; works only if the decoder is the encoder."""

    name = "smuggler"
    rate_parameter = "level"
    default_sweep = (1,)

    def encode(self, image, setting):
        self.last = image
        return b"x"

    def decode(self, data):
        return self.last


class Raises(Raw):
    name = "raises"

    def encode(self, image, setting):
        if setting == 2:
            raise RuntimeError("boom at level 2")
        return super().encode(image, setting)


class Hangs(Raw):
    name = "hangs"

    def decode(self, data):
        while True:
            time.sleep(0.01)


class WrongSize(Raw):
    name = "wrongsize"

    def decode(self, data):
        return super().decode(data)[:-1]


class Crashes(Raw):
    """Kills its own worker process on one image, like a segfault in a C library."""

    name = "crashes"

    def encode(self, image, setting):
        if image.shape[0] == 112:
            os._exit(1)
        return super().encode(image, setting)


class Noisy(Raw):
    """Raw pixels plus seeded Gaussian noise of `sigma` (an option, so two runs of the same label can differ)."""

    name = "noisy"
    defaults = {"sigma": 5.0, "sleep": 0.0}

    def encode(self, image, setting):
        rng = np.random.default_rng(int(setting))
        noisy = image + rng.normal(0, self.options["sigma"] * float(setting), image.shape)
        return super().encode(np.clip(noisy, 0, 255).astype(np.uint8), setting)



class AlwaysRaises(Raw):
    """A plug-in codec whose encode always fails: every row of the run fails."""

    name = "alwaysraises"

    def encode(self, image, setting):
        raise RuntimeError("this encoder always fails")


class FailsBySetting(Raw):
    """A plug-in codec whose encode fails with a reason of its setting's own: as many reasons as settings."""

    name = "failsbysetting"

    def encode(self, image, setting):
        raise RuntimeError(f"no encoder for level {setting}")


class Gated(Raw):
    """Raw, except that images from index `after` on wait until the file `gate` exists: a run that cannot
    finish until the test lets it, so kill-and-resume tests wait on what they observe, never on a clock."""

    name = "gated"
    defaults = {"sleep": 0.0, "gate": "", "after": 0}
    needs_record = True

    def encode(self, image, setting, record=None):
        while record.index >= self.options["after"] and not os.path.exists(self.options["gate"]):
            time.sleep(0.01)
        return super().encode(image, setting)


class Versioned(Raw):
    """Raw whose declared library version comes from the environment, as after an upgrade."""

    name = "versioned"

    def versions(self):
        return {"fakelib": os.environ.get("CMCBENCH_TEST_FAKELIB", "1.0")}


class NoisyJPEG(Codec):
    """JPEG whose decoder adds seeded noise: the same bits, a worse picture (a regression to catch)."""

    name = "noisyjpeg"
    rate_parameter = "quality"
    default_sweep = (10, 30, 50, 70, 90)
    defaults = {"sigma": 0.0}

    def encode(self, image, setting):
        from baselines.jpeg import JPEG

        return JPEG().encode(image, setting)

    def decode(self, data):
        from baselines.jpeg import JPEG

        out = JPEG().decode(data).astype(np.float64)
        out += np.random.default_rng(len(data)).normal(0, self.options["sigma"], out.shape)
        return np.clip(np.round(out), 0, 255).astype(np.uint8)


class NativeHang(Raw):
    """Raw, but decoding the 112-px-tall image blocks in C with SIGALRM masked: like a hang inside libaom or a
    deadlocked lock, it never returns to the interpreter, so no Python-level alarm can stop it."""

    name = "nativehang"

    def decode(self, data):
        if int.from_bytes(data[:2], "big") == 112:
            import ctypes
            import signal

            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            ctypes.CDLL(None).pause()
        return super().decode(data)


class PerSettingModel(Codec):
    """A learned codec's shape: one 'model' per setting (a quantisation step), loaded on first use of its
    setting and dropped for the next; batched. Each load is appended to the file `log` (role, setting, pid).
    The step travels in the bitstream header too, so decode(data) alone works."""

    name = "persetting"
    rate_parameter = "step"
    default_sweep = (4, 16, 64)
    defaults = {"log": ""}
    batch_size = 4
    model_per_setting = True
    rate_range, rate_integer, rate_increasing = (1, 255), True, False

    def __init__(self, **options):
        super().__init__(**options)
        self.model = None  # (setting, step)

    def _load(self, setting, role):
        if self.model is None or self.model[0] != setting:
            if self.options["log"]:
                with open(self.options["log"], "a") as f:
                    f.write(f"{role} {setting} {os.getpid()}\n")
            self.model = (setting, int(setting))
        return self.model[1]

    def encode_batch(self, images, setting, records=None):
        step = self._load(setting, "encoder")
        return [bytes([step]) + Raw().encode((image // step).astype(np.uint8), 0) for image in images]

    def decode_batch(self, data, setting):
        step = self._load(setting, "decoder")
        return [(Raw().decode(d[1:]).astype(np.int32) * step + step // 2).clip(0, 255).astype(np.uint8) for d in data]

    def encode(self, image, setting):
        return self.encode_batch([image], setting)[0]

    def decode(self, data):
        return self.decode_batch([data], data[0])[0]


class SeededNoise(Codec):
    """A stochastic decoder: JPEG bits, decoded with Gaussian noise drawn from (seed, the bytes)."""

    name = "seedednoise"
    rate_parameter = "quality"
    default_sweep = (30, 80)
    defaults = {"seed": 0, "sigma": 6.0}
    stochastic = True

    def encode(self, image, setting):
        from baselines.jpeg import JPEG

        return JPEG().encode(image, setting)

    def decode(self, data):
        import zlib

        from baselines.jpeg import JPEG

        rng = np.random.default_rng([self.options["seed"], zlib.crc32(data)])
        out = JPEG().decode(data) + rng.normal(0, self.options["sigma"], (1,) * 3)  # a per-image offset
        out = out + rng.normal(0, self.options["sigma"], out.shape)
        return np.clip(np.round(out), 0, 255).astype(np.uint8)


class OnDevice(Codec):
    """A network codec's shape: main process, batched, its decoder waiting `latency` s per image on a device (a
    sleep, which releases the GIL as waiting on a CUDA stream does). `gpu=false` runs it without the scoring
    thread, so the two runs differ only in whether scoring overlaps producing."""

    name = "ondevice"
    rate_parameter = "quality"
    default_sweep = (30, 80)
    defaults = {"gpu": True, "latency": 0.0}
    parallel = False
    batch_size = 4

    def __init__(self, **options):
        super().__init__(**options)
        self.wants_gpu = self.options["gpu"]

    def encode(self, image, setting):
        from baselines.jpeg import JPEG

        return JPEG().encode(image, setting)

    def decode_batch(self, data, setting):
        from baselines.jpeg import JPEG

        time.sleep(self.options["latency"] * len(data))
        return [JPEG().decode(d) for d in data]

    def decode(self, data):
        return self.decode_batch([data], None)[0]


class HoldsTemporaryFolder(Raw):
    """Holds a temporary folder from its first encode to its process's end, as a library imported in a worker
    may (wandb, imported by timm, makes two at import); each folder's path is appended to `log`."""

    name = "holdstemp"
    defaults = {**Raw.defaults, "log": ""}

    def encode(self, image, setting):
        import tempfile

        if not hasattr(self, "held"):
            self.held = tempfile.TemporaryDirectory(prefix="cmcbench-test-held-")
            with open(self.options["log"], "a") as f:
                f.write(self.held.name + "\n")
        return super().encode(image, setting)
