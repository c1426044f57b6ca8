# Does host memory traffic (copies on N threads) slow the H2D upload of a pinned buffer? Run 66 (docs/PERF.md):
# python3 Benchmarks/h2d_contention.py on the GPU machine (PyTorch, one GPU).
import threading, time
import numpy as np, torch

SIZE = 16_545_000  # the paper preset's upload, bytes
src = torch.empty(SIZE, dtype=torch.uint8).pin_memory()
dst = torch.empty(SIZE, dtype=torch.uint8, device="cuda")
streams = [torch.cuda.Stream(), torch.cuda.Stream()]

def h2d(seconds=1.5, split=1):
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            if split == 1:
                dst.copy_(src, non_blocking=True)
            else:
                h = SIZE // 2
                with torch.cuda.stream(streams[0]): dst[:h].copy_(src[:h], non_blocking=True)
                with torch.cuda.stream(streams[1]): dst[h:].copy_(src[h:], non_blocking=True)
            n += 1
        torch.cuda.synchronize()
    return SIZE * n / (time.perf_counter() - t0) / 1e9

class Load:
    """N threads copying 17 MB numpy arrays (memcpy, GIL released) until stopped."""
    def __init__(self, threads):
        self.stop, self.count, self.threads = False, [0] * threads, []
        for i in range(threads):
            a = np.random.randint(0, 255, 17_000_000, dtype=np.uint8)
            t = threading.Thread(target=self.run, args=(i, a, np.empty_like(a)))
            self.threads.append(t)
    def run(self, i, a, b):
        while not self.stop:
            np.copyto(b, a); self.count[i] += 1
    def __enter__(self):
        self.t0 = time.perf_counter()
        for t in self.threads: t.start()
        return self
    def __exit__(self, *_):
        self.stop = True
        for t in self.threads: t.join()
        self.rate = sum(self.count) * 17e6 / (time.perf_counter() - self.t0) / 1e9

print(f"H2D alone, one stream: {h2d():.1f} GB/s")
print(f"H2D alone, two streams (halves): {h2d(split=2):.1f} GB/s")
for threads in [4, 8, 12, 16]:
    with Load(threads) as load:
        time.sleep(0.2)
        bw = h2d()
    with Load(threads) as alone:
        time.sleep(1.5)
    print(f"{threads:2d} host copy threads: H2D {bw:.1f} GB/s while they copy {load.rate:.1f} GB/s; they alone {alone.rate:.1f} GB/s")
