// Native CPU recurrences for rnnlab (optional fast path, see rnnlab/kernels/__init__.py).
//
// Only the sequential part of a recurrent layer lives here: per step one sgemm
// (`h_in @ W_hh^T`, forward; `dG @ W_hh`, backward) and the fused gate math. The hoisted input
// projection and every weight gradient stay in XLA (one large matmul each), exactly as in the
// scan path of rnnlab/recurrence.py, whose per-step semantics this file reproduces:
//
//   start     = reset[t, b] ? 0 : carry_prev
//   h_in      = start.h * mask[b]
//   new, y    = cell(start, P[t] + h_in @ W^T)
//   new       = keep * start + (1 - keep) * new;  y = new.h          (zoneout)
//   carry, y  = valid[t, b] ? (new, y) : (carry_prev, 0)              (lengths)
//
// Cells (attribute `kind`): 0 LSTM (gates i, f, g, o), 1 GRU reset-after (gates r, z, n, with
// `b_hn` inside the reset gate), 2 Elman tanh, 3 Elman relu. Optional inputs are passed as
// zero-sized buffers. The forward can add the input bias to P itself (LSTM, Elman: one XLA pass
// over [t, b, g] less) and write `ys` batch-major, `[b, t, h]` (attribute `batch_major`, which
// the backward's `d ys` then follows), so that no transpose is needed around the call. The
// per-step product uses the packed AVX-512 kernel when it applies, else cblas_sgemm handed over
// by the Python loader (OpenBLAS from `scipy-openblas32`), so nothing is linked at build time.
//
// One library for any x86-64: this file is compiled for the baseline (`-march=x86-64` unless
// RNNLAB_NATIVE_ARCH says otherwise) and includes the ISA-dependent code (rnn_kernels_isa.inc)
// three times, each in its own namespace under `#pragma GCC target`: "avx512" (x86-64-v4's
// AVX-512 F/CD/BW/DQ/VL, the hand-written 16-lane gate loops and the packed GEMM), "avx2"
// (x86-64-v3: AVX2 + FMA, compiler-vectorised gate loops, BLAS products) and "scalar" (the
// baseline: SSE2 only). When the library is loaded, the best ISA the CPU (and OS) supports is
// chosen with __builtin_cpu_supports, before any kernel runs; the loader may choose another one
// the CPU supports (RnnlabSelectIsa, `RNNLAB_NATIVE_ISA`). Everything outside the three
// namespaces, the standard library's inline code included, is baseline code, so no path can
// execute an instruction its CPU lacks.

#if !defined(__x86_64__) || defined(__clang__)
#error "rnn_kernels.cc targets x86-64 with GCC (#pragma GCC target); build it with CXX=g++"
#endif

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sched.h>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// cblas_sgemm, set once at load time through RnnlabSetSgemm.
using SgemmFn = void (*)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                         const float* a, int lda, const float* b, int ldb, float beta, float* c,
                         int ldc);
SgemmFn sgemm = nullptr;

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
enum Kind { kLSTM = 0, kGRU = 1, kTanh = 2, kRelu = 3 };

using F32 = ffi::Buffer<ffi::F32>;
using Out = ffi::ResultBuffer<ffi::F32>;

inline const float* opt(const F32& b) { return b.element_count() ? b.typed_data() : nullptr; }
inline float* opt(Out& b) { return b->element_count() ? b->typed_data() : nullptr; }

// Whether the packed kernel may be used at all (RNNLAB_NATIVE_GEMM=blas turns it off, to compare).
inline bool packed_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("RNNLAB_NATIVE_GEMM");
    return !(env && std::string(env) == "blas");
  }();
  return enabled;
}

// ----------------------------------------------------------------------------- threading
//
// Two threads share a call (`Split` below says how): the calling thread publishes each phase of
// work and claims its chunks itself; one helper task on XLA's intra-op thread pool joins when a
// pool thread is free and claims chunks too. Nothing ever waits for the helper to *start* (the
// pool may be busy, e.g. with the other direction of a bidirectional layer), so there is no
// deadlock and no extra thread: BLAS runs single-threaded inside each chunk (set by the Python
// loader). With the row split a call is one phase of two chunks (each a whole recurrence over
// half the batch); with the column split every step is two phases separated by barriers.

struct Team {
  std::atomic<uint64_t> state{0};  // (phase << 32) | next unclaimed chunk
  std::atomic<int> done{0};        // chunks finished in the current phase
  std::atomic<int> nchunks{0};
  std::atomic<const std::function<void(int)>*> fn{nullptr};
  std::atomic<int> helper{0};  // 0 not started, 1 running, 2 gone
  std::atomic<bool> stop{false};
  int caller_cpu = -1;  // where the calling thread ran when it scheduled the helper

  void work(uint64_t phase) {
    for (;;) {
      uint64_t s = state.load(std::memory_order_acquire);
      if ((s >> 32) != phase || int(s & 0xffffffffu) >= nchunks.load(std::memory_order_relaxed))
        return;
      if (state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
        (*fn.load(std::memory_order_relaxed))(int(s & 0xffffffffu));
        done.fetch_add(1, std::memory_order_acq_rel);
      }
    }
  }
};

// Spin briefly, then yield: on an oversubscribed machine a spinning thread would otherwise take
// the core from the one it waits for.
inline void cpu_relax(int& spins) {
  if (++spins < 2000) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    spins = 0;
    std::this_thread::yield();
  }
}

// Moves the calling thread off `cpu` while it lives (when it runs there and another CPU is
// allowed), restoring its CPU set afterwards. The scheduler tends to wake the helper on the
// caller's own core, where the two spin on one core's time slices (measured: a third of the
// calls, at about half the speed); two spinning threads need two cores.
class AwayFrom {
 public:
  explicit AwayFrom(int cpu) {
    if (cpu < 0 || sched_getcpu() != cpu || sched_getaffinity(0, sizeof(saved_), &saved_) != 0)
      return;
    cpu_set_t others = saved_;
    CPU_CLR(cpu, &others);
    if (CPU_COUNT(&others) > 0 && sched_setaffinity(0, sizeof(others), &others) == 0) moved_ = true;
  }
  ~AwayFrom() {
    if (moved_) sched_setaffinity(0, sizeof(saved_), &saved_);
  }
  AwayFrom(const AwayFrom&) = delete;
  AwayFrom& operator=(const AwayFrom&) = delete;

 private:
  cpu_set_t saved_;
  bool moved_ = false;
};

class Workers {
 public:
  Workers(ffi::ThreadPool& pool, bool parallel) {
    if (!parallel || pool.num_threads() < 2) return;
    team_ = std::make_shared<Team>();
    team_->caller_cpu = sched_getcpu();
    std::shared_ptr<Team> team = team_;
    pool.Schedule([team]() {
      int idle = 0;
      if (!team->helper.compare_exchange_strong(idle, 1)) return;
      AwayFrom away(team->caller_cpu);
      uint64_t seen = 0;
      int spins = 0;
      while (!team->stop.load(std::memory_order_acquire)) {
        const uint64_t phase = team->state.load(std::memory_order_acquire) >> 32;
        if (phase != seen) {
          team->work(phase);
          seen = phase;
          spins = 0;
        } else {
          cpu_relax(spins);
        }
      }
      team->helper.store(2, std::memory_order_release);
    });
  }
  ~Workers() {
    if (!team_) return;
    team_->stop.store(true, std::memory_order_release);
    int idle = 0;
    int spins = 0;
    if (!team_->helper.compare_exchange_strong(idle, 2)) {
      while (team_->helper.load(std::memory_order_acquire) != 2) cpu_relax(spins);
    }
  }
  int size() const { return team_ ? 2 : 1; }
  // Runs fn(0..n-1), possibly two at a time; returns when all are done.
  void run(int n, const std::function<void(int)>& fn) {
    if (!team_ || n == 1) {
      for (int c = 0; c < n; ++c) fn(c);
      return;
    }
    Team& t = *team_;
    t.fn.store(&fn, std::memory_order_relaxed);
    t.nchunks.store(n, std::memory_order_relaxed);
    t.done.store(0, std::memory_order_relaxed);
    const uint64_t phase = ++phase_;
    t.state.store(phase << 32, std::memory_order_release);
    t.work(phase);
    int spins = 0;
    while (t.done.load(std::memory_order_acquire) < n) cpu_relax(spins);
  }

 private:
  std::shared_ptr<Team> team_;
  uint64_t phase_ = 0;
};

// [begin, end) of chunk c of n over `size` items, boundaries on multiples of `align`.
inline std::pair<int, int> chunk(int c, int n, int size, int align) {
  auto at = [&](int k) {
    const int raw = int((int64_t(size) * k) / n);
    return k == n ? size : std::min(size, (raw + align - 1) / align * align);
  };
  return {at(c), at(c + 1)};
}

// How a call uses the second thread. kRows: each thread runs the whole recurrence for its own
// batch rows (a row's next step needs only that row's carry, so the threads never wait for each
// other; each reads all of W per step). kColumns: each step's product split by output columns
// and the gate math by rows, two barriers a step (each thread reads half of W). Two threads only
// pay off once a step has enough work (~b*g*h >= 2^18, measured on 2 cores); rows need a few
// rows per thread to keep the register-blocked product efficient. RNNLAB_NATIVE_SPLIT=columns|
// rows|none forces one (to measure).
enum class Split { kNone, kRows, kColumns };

inline Split choose_split(int B, int G, int H) {
  static const int forced = [] {
    const char* env = std::getenv("RNNLAB_NATIVE_SPLIT");
    if (!env) return -1;
    const std::string v(env);
    return v == "none" ? 0 : v == "rows" ? 1 : v == "columns" ? 2 : -1;
  }();
  if (forced == 0 || B < 1 || int64_t(B) * G * H < (1 << 18)) return Split::kNone;
  if (forced == 1 && B >= 2) return Split::kRows;
  if (forced == 2) return Split::kColumns;
  return B >= 8 ? Split::kRows : Split::kColumns;
}

// Whether this CPU (and OS) runs AVX512_BF16's vdpbf16ps (the bfloat16 matmuls, AVX-512 path).
bool bf16_supported() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  }();
  return ok;
}

// ----------------------------------------------------------------------------- one copy per ISA
//
// The target lists name exactly the features `supports_*` below checks.

namespace scalar {
#define RNNLAB_AVX512 0
#include "rnn_kernels_isa.inc"
#undef RNNLAB_AVX512
}  // namespace scalar

#pragma GCC push_options
#pragma GCC target("sse4.2,popcnt,avx,avx2,fma,bmi,bmi2")
namespace avx2 {
#define RNNLAB_AVX512 0
#include "rnn_kernels_isa.inc"
#undef RNNLAB_AVX512
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("sse4.2,popcnt,avx,avx2,fma,bmi,bmi2,avx512f,avx512cd,avx512bw,avx512dq," \
                   "avx512vl,prefer-vector-width=512")
namespace avx512 {
#define RNNLAB_AVX512 1
#include "rnn_kernels_isa.inc"
#undef RNNLAB_AVX512
}  // namespace avx512
#pragma GCC pop_options

// ----------------------------------------------------------------------------- dispatch

bool supports_scalar() { return true; }

bool supports_avx2() {
  __builtin_cpu_init();  // may run before libgcc's own initialiser (we are called at load time)
  return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("popcnt") &&
         __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
         __builtin_cpu_supports("bmi2");
}

// __builtin_cpu_supports reports AVX-512 only when the OS saves the zmm state (XCR0) too.
bool supports_avx512() {
  return supports_avx2() && __builtin_cpu_supports("avx512f") &&
         __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

struct Isa {
  const char* name;
  bool (*supported)();
  decltype(&scalar::Forward) forward;
  decltype(&scalar::Backward) backward;
};

// Best first.
const Isa kIsas[] = {
    {"avx512", supports_avx512, avx512::Forward, avx512::Backward},
    {"avx2", supports_avx2, avx2::Forward, avx2::Backward},
    {"scalar", supports_scalar, scalar::Forward, scalar::Backward},
};

const Isa* best_isa() {
  for (const Isa& isa : kIsas)
    if (isa.supported()) return &isa;
  return &kIsas[std::size(kIsas) - 1];
}

// Chosen when the library is loaded, so that no call can run before the CPU check.
std::atomic<const Isa*> chosen{best_isa()};

std::string isa_names(bool supported_only) {
  std::string names;
  for (const Isa& isa : kIsas) {
    if (supported_only && !isa.supported()) continue;
    names += (names.empty() ? "" : ",") + std::string(isa.name);
  }
  return names;
}

ffi::Error Forward(ffi::ThreadPool pool, F32 P, F32 W, F32 c0, F32 h0, F32 valid_b, F32 reset_b,
                   F32 mask_b, F32 keep_c_b, F32 keep_h_b, F32 b_hn_b, F32 bias_b, Out ys, Out hT,
                   Out cT, Out hs_b, Out cs_b, Out hin_b, Out gates_b, Out aux_b, int32_t kind,
                   int32_t batch_major, int32_t bf16) {
  return chosen.load(std::memory_order_relaxed)
      ->forward(pool, P, W, c0, h0, valid_b, reset_b, mask_b, keep_c_b, keep_h_b, b_hn_b, bias_b,
                ys, hT, cT, hs_b, cs_b, hin_b, gates_b, aux_b, kind, batch_major, bf16);
}

ffi::Error Backward(ffi::ThreadPool pool, F32 W, F32 c0, F32 h0, F32 valid_b, F32 reset_b,
                    F32 mask_b, F32 keep_c_b, F32 keep_h_b, F32 gates_b, F32 aux_b, F32 hs_b,
                    F32 cs_b, F32 dys_b, F32 dhT, F32 dcT, Out dproj_b, Out drec_b, Out dh0,
                    Out dc0, int32_t kind, int32_t batch_major, int32_t bf16) {
  return chosen.load(std::memory_order_relaxed)
      ->backward(pool, W, c0, h0, valid_b, reset_b, mask_b, keep_c_b, keep_h_b, gates_b, aux_b,
                 hs_b, cs_b, dys_b, dhT, dcT, dproj_b, drec_b, dh0, dc0, kind, batch_major, bf16);
}

}  // namespace

// The exported symbols (the library is built with -fvisibility=hidden).
#define RNNLAB_EXPORT extern "C" __attribute__((visibility("default")))

RNNLAB_EXPORT void RnnlabSetSgemm(void* fn) { sgemm = reinterpret_cast<SgemmFn>(fn); }

// 1 when the kernels take `bf16=1` (bfloat16 matmuls): the AVX-512 path on a CPU with
// AVX512_BF16.
RNNLAB_EXPORT int RnnlabBf16() {
  return std::string(chosen.load()->name) == "avx512" && bf16_supported();
}

// The ISA the kernels run on: "avx512", "avx2" or "scalar".
RNNLAB_EXPORT const char* RnnlabIsa() { return chosen.load()->name; }

// Every ISA built in ("avx512,avx2,scalar"), or only those this CPU runs; best first.
RNNLAB_EXPORT const char* RnnlabIsas(int supported_only) {
  static const std::string all = isa_names(false), here = isa_names(true);
  return (supported_only ? here : all).c_str();
}

// Runs the kernels on ISA `name` from now on; 1 on success, 0 (nothing changed) when `name` is
// not built in or this CPU cannot run it. Call it before the first kernel call.
RNNLAB_EXPORT int RnnlabSelectIsa(const char* name) {
  for (const Isa& isa : kIsas) {
    if (std::string(isa.name) != name) continue;
    if (!isa.supported()) return 0;
    chosen.store(&isa);
    return 1;
  }
  return 0;
}

RNNLAB_EXPORT XLA_FFI_Error* RnnlabForward(XLA_FFI_CallFrame*);
RNNLAB_EXPORT XLA_FFI_Error* RnnlabBackward(XLA_FFI_CallFrame*);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabForward, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()  // P [t, b, g]
                                  .Arg<F32>()  // W [g, h]
                                  .Arg<F32>()  // c0 [b, h] (LSTM) or empty
                                  .Arg<F32>()  // h0 [b, h]
                                  .Arg<F32>()  // valid [t, b] or empty
                                  .Arg<F32>()  // reset [t, b] or empty
                                  .Arg<F32>()  // mask [b, h] or empty
                                  .Arg<F32>()  // zoneout keep c [t, b, h] or empty
                                  .Arg<F32>()  // zoneout keep h [t, b, h] or empty
                                  .Arg<F32>()  // b_hn [h] (GRU) or empty
                                  .Arg<F32>()  // bias [g] added to P (not GRU) or empty
                                  .Ret<F32>()  // ys [t, b, h] ([b, t, h] if batch_major)
                                  .Ret<F32>()  // h_T [b, h]
                                  .Ret<F32>()  // c_T [b, h] (LSTM) or empty
                                  .Ret<F32>()  // hs: carry h after each step (train) or empty
                                  .Ret<F32>()  // cs: carry c after each step (LSTM train)
                                  .Ret<F32>()  // h_in [t, b, h] (train) or empty
                                  .Ret<F32>()  // gate activations [t, b, g] (train) or empty
                                  .Ret<F32>()  // LSTM: raw c; GRU: W_hn h + b_hn (train)
                                  .Attr<int32_t>("kind")
                                  .Attr<int32_t>("batch_major")
                                  .Attr<int32_t>("bf16"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnlabBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>()  // W
                                  .Arg<F32>()  // c0
                                  .Arg<F32>()  // h0
                                  .Arg<F32>()  // valid
                                  .Arg<F32>()  // reset
                                  .Arg<F32>()  // mask
                                  .Arg<F32>()  // keep c
                                  .Arg<F32>()  // keep h
                                  .Arg<F32>()  // gates
                                  .Arg<F32>()  // aux
                                  .Arg<F32>()  // hs
                                  .Arg<F32>()  // cs
                                  .Arg<F32>()  // d ys (layout as the forward's ys)
                                  .Arg<F32>()  // d h_T
                                  .Arg<F32>()  // d c_T
                                  .Ret<F32>()  // d projected [t, b, g]
                                  .Ret<F32>()  // d recurrent [t, b, g] (GRU) or empty
                                  .Ret<F32>()  // d h0
                                  .Ret<F32>()  // d c0 (LSTM) or empty
                                  .Attr<int32_t>("kind")
                                  .Attr<int32_t>("batch_major")
                                  .Attr<int32_t>("bf16"));
