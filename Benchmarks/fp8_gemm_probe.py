# Run 51 (docs/PERF.md, "fp8 math"): cuBLASLt fp8 against bf16 at the mlperf-v2 shapes; needs torch on a GPU.
# Per-row (outer-vector) fp8 scales in cuBLASLt on this GPU: does it run, is it right, how fast against
# per-tensor fp8 and bf16 (torch.mm) at the mlperf-v2 cross/top shapes, batch 8192.
import ctypes, glob, os, torch
paths = glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "*", "lib", "libcublasLt.so*"))
lt = ctypes.CDLL(paths[0]); vp = ctypes.c_void_p
handle = vp(); assert lt.cublasLtCreate(ctypes.byref(handle)) == 0
ws = torch.empty(32 << 20, dtype=torch.uint8, device="cuda")
class Res(ctypes.Structure):
    _fields_ = [("algo", ctypes.c_uint64 * 8), ("ws", ctypes.c_size_t), ("state", ctypes.c_int), ("waves", ctypes.c_float), ("r", ctypes.c_int * 4)]
def sa(desc, attr, value, ctype):
    v = ctype(value); r = lt.cublasLtMatmulDescSetAttribute(desc, attr, ctypes.byref(v), ctypes.sizeof(v)); assert r == 0, (attr, r)
def layout(t, r, c, ld):
    l = vp(); assert lt.cublasLtMatrixLayoutCreate(ctypes.byref(l), t, ctypes.c_uint64(r), ctypes.c_uint64(c), ctypes.c_int64(ld)) == 0; return l
def plan(M, N, K, A, B, D, bias, sA, sB, mode, fast):
    desc = vp(); lt.cublasLtMatmulDescCreate(ctypes.byref(desc), 68, 0)
    sa(desc, 3, 1, ctypes.c_int32); sa(desc, 4, 0, ctypes.c_int32); sa(desc, 7, 4, ctypes.c_uint32); sa(desc, 8, bias.data_ptr(), ctypes.c_uint64)
    sa(desc, 17, sA.data_ptr(), ctypes.c_uint64); sa(desc, 18, sB.data_ptr(), ctypes.c_uint64)
    if mode: sa(desc, 31, mode, ctypes.c_int32); sa(desc, 32, mode, ctypes.c_int32)
    sa(desc, 25, fast, ctypes.c_int8)
    la, lb, ld_ = layout(28, K, M, K), layout(28, K, N, K), layout(14, M, N, M)
    pref = vp(); lt.cublasLtMatmulPreferenceCreate(ctypes.byref(pref))
    wsz = ctypes.c_uint64(32 << 20); lt.cublasLtMatmulPreferenceSetAttribute(pref, 1, ctypes.byref(wsz), 8)
    res = (Res * 8)(); n = ctypes.c_int(0)
    h = lt.cublasLtMatmulAlgoGetHeuristic(handle, desc, la, lb, ld_, ld_, pref, 8, res, ctypes.byref(n))
    alpha = ctypes.c_float(1); beta = ctypes.c_float(0)
    def run(i):
        return lt.cublasLtMatmul(handle, desc, ctypes.byref(alpha), vp(A.data_ptr()), la, vp(B.data_ptr()), lb, ctypes.byref(beta),
                                 vp(D.data_ptr()), ld_, vp(D.data_ptr()), ld_, ctypes.byref(res[i].algo), vp(ws.data_ptr()),
                                 ctypes.c_size_t(32 << 20), vp(torch.cuda.current_stream().cuda_stream))
    return h, n.value, run
def timeit(f, reps=50):
    for _ in range(5): f()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps): f()
    e.record(); torch.cuda.synchronize(); return s.elapsed_time(e) / reps * 1000
N = 8192
for (M, K) in [(512, 3456), (3456, 512), (1024, 3456), (1024, 1024), (512, 1024), (256, 512)]:
    W = torch.randn(M, K, device="cuda") * 0.05; X = torch.randn(N, K, device="cuda")
    bias = torch.randn(M, device="cuda", dtype=torch.bfloat16)
    ref = (X.double() @ W.double().t() + bias.double()).float()
    Wb, Xb = W.bfloat16(), X.bfloat16()
    tb = timeit(lambda: torch.addmm(bias, Xb, Wb.t()))
    line = f"M={M} K={K}: bf16 {tb:.1f} us ({2*M*N*K/tb/1e6:.0f} TF)"
    for mode in (0, 3):
        if mode == 0:
            sw = (W.abs().max() / 448).reshape(1).repeat(4).contiguous(); sx = (X.abs().max() / 448).reshape(1).repeat(4).contiguous()
            Wq = (W / sw[0]).to(torch.float8_e4m3fn); Xq = (X / sx[0]).to(torch.float8_e4m3fn)
        else:
            sw = (W.abs().amax(1) / 448).contiguous(); sx = (X.abs().amax(1) / 448).contiguous()
            Wq = (W / sw[:, None]).to(torch.float8_e4m3fn); Xq = (X / sx[:, None]).to(torch.float8_e4m3fn)
        for fast in (0, 1):
            D = torch.full((N, M), float("nan"), device="cuda", dtype=torch.bfloat16)
            h, n, run = plan(M, N, K, Wq, Xq, D, bias, sw, sx, mode, fast)
            if n == 0: line += f" | mode {mode} fast {fast}: heuristic {h} n=0"; continue
            best = None
            for i in range(n):
                if run(i) != 0: continue
                t = timeit(lambda: run(i))
                if best is None or t < best[0]: best = (t, i)
            if best is None: line += f" | mode {mode} fast {fast}: all fail ({run(0)})"; continue
            run(best[1]); torch.cuda.synchronize()
            err = ((D.float() - ref).norm() / ref.norm()).item()
            line += f" | mode {mode} fast {fast}: {best[0]:.1f} us ({2*M*N*K/best[0]/1e6:.0f} TF) rel err {err:.1e}"
    print(line, flush=True)
# a memory pass: copy of 113 MB fp32 (read + write) and a read-only reduction
x = torch.randn(N, 3456, device="cuda"); y = torch.empty_like(x)
print(f"copy 113 MB: {timeit(lambda: y.copy_(x)):.1f} us; amax 113 MB: {timeit(lambda: x.abs().amax()):.1f} us")
