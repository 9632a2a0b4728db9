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
// per-step product uses the packed AVX-512 kernel below when it applies, else cblas_sgemm handed
// over by the Python loader (OpenBLAS from `scipy-openblas32`), so nothing is linked at build
// time.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <memory>
#include <utility>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
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

// exp for float32 (Cephes' expf: Cody-Waite range reduction, degree-6 polynomial, ~1 ulp) written
// so that the compiler vectorises the gate loops (libm's expf/tanhf calls block vectorisation).
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

// tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|): no cancellation for large |x|, and
// for small |x| the absolute error stays at float32 rounding level (what the parity tests need).
inline float fast_tanh(float x) {
  const float e = fast_exp(-2.0f * std::fabs(x));
  const float t = (1.0f - e) / (1.0f + e);
  return std::copysign(t, x);
}

#if defined(__AVX512F__)
// 16-lane versions of the above for the gate loops: the same exp (range reduction and
// polynomial; the power of two by vscalefps), and the divisions by a reciprocal estimate refined
// by one Newton step (~1 ulp; vdivps is the slowest instruction in these loops).
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(
      _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

inline __m512 rcp16(__m512 d) {
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

inline __m512 sigmoid16(__m512 x) {
  const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
  return rcp16(_mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

inline __m512 tanh16(__m512 x) {
  const __m512i sign = _mm512_set1_epi32(int32_t(0x80000000u));
  const __m512i xi = _mm512_castps_si512(x);
  const __m512 ax = _mm512_castsi512_ps(_mm512_andnot_si512(sign, xi));
  const __m512 e = exp16(_mm512_mul_ps(_mm512_set1_ps(-2.0f), ax));
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 t = _mm512_mul_ps(_mm512_sub_ps(one, e), rcp16(_mm512_add_ps(one, e)));
  return _mm512_castsi512_ps(
      _mm512_or_si512(_mm512_castps_si512(t), _mm512_and_si512(sign, xi)));
}
#endif

// One row of pointwise math. `g` holds the pre-activations on entry and the activations on exit.
// `sh`, `sc`: the (reset) start carry; `hc`, `cc`: the carry, updated in place. `kh`, `kc`:
// zoneout keep (nullable). `v`: the row is valid (else the carry stays and `y` is zero).
// Each loop is kept branch-free so that it vectorises.
void finish_row(int H, const float* __restrict sh, float* __restrict hc,
                const float* __restrict kh, const float* __restrict hn, float* __restrict y) {
  if (kh) {
    for (int j = 0; j < H; ++j) hc[j] = kh[j] * sh[j] + (1.0f - kh[j]) * hn[j];
  } else {
    std::memcpy(hc, hn, H * sizeof(float));
  }
  std::memcpy(y, hc, H * sizeof(float));
}

void lstm_row(int H, float* __restrict g, float* __restrict craw, const float* __restrict sh,
              const float* __restrict sc, float* __restrict hc, float* __restrict cc,
              const float* __restrict kh, const float* __restrict kc, bool v,
              float* __restrict hn, float* __restrict y) {
  float* __restrict gi = g;
  float* __restrict gf = g + H;
  float* __restrict gg = g + 2 * H;
  float* __restrict go = g + 3 * H;
  int j0 = 0;
#if defined(__AVX512F__)
  for (; j0 + 16 <= H; j0 += 16) {
    const __m512 i = sigmoid16(_mm512_loadu_ps(gi + j0)), f = sigmoid16(_mm512_loadu_ps(gf + j0));
    const __m512 gt = tanh16(_mm512_loadu_ps(gg + j0)), o = sigmoid16(_mm512_loadu_ps(go + j0));
    const __m512 c = _mm512_fmadd_ps(f, _mm512_loadu_ps(sc + j0), _mm512_mul_ps(i, gt));
    _mm512_storeu_ps(gi + j0, i);
    _mm512_storeu_ps(gf + j0, f);
    _mm512_storeu_ps(gg + j0, gt);
    _mm512_storeu_ps(go + j0, o);
    _mm512_storeu_ps(craw + j0, c);
    _mm512_storeu_ps(hn + j0, _mm512_mul_ps(o, tanh16(c)));
  }
#endif
  for (int j = j0; j < H; ++j) {
    const float i = sigmoid(gi[j]), f = sigmoid(gf[j]), gt = fast_tanh(gg[j]);
    const float o = sigmoid(go[j]);
    const float c = f * sc[j] + i * gt;
    gi[j] = i;
    gf[j] = f;
    gg[j] = gt;
    go[j] = o;
    craw[j] = c;
    hn[j] = o * fast_tanh(c);
  }
  if (!v) {
    std::memset(y, 0, H * sizeof(float));
    return;
  }
  if (kc) {
    for (int j = 0; j < H; ++j) cc[j] = kc[j] * sc[j] + (1.0f - kc[j]) * craw[j];
  } else {
    std::memcpy(cc, craw, H * sizeof(float));
  }
  finish_row(H, sh, hc, kh, hn, y);
}

void gru_row(int H, const float* __restrict p, const float* __restrict r_pre, float* __restrict g,
             float* __restrict rn_out, const float* __restrict b_hn, const float* __restrict sh,
             float* __restrict hc, const float* __restrict kh, bool v, float* __restrict hn,
             float* __restrict y) {
  for (int j = 0; j < H; ++j) {
    const float r = sigmoid(p[j] + r_pre[j]);
    const float z = sigmoid(p[H + j] + r_pre[H + j]);
    const float rn = r_pre[2 * H + j] + b_hn[j];
    const float n = fast_tanh(p[2 * H + j] + r * rn);
    g[j] = r;
    g[H + j] = z;
    g[2 * H + j] = n;
    rn_out[j] = rn;
    hn[j] = (1.0f - z) * n + z * sh[j];
  }
  if (!v) {
    std::memset(y, 0, H * sizeof(float));
    return;
  }
  finish_row(H, sh, hc, kh, hn, y);
}

void elman_row(int H, bool relu, float* __restrict g, const float* __restrict sh,
               float* __restrict hc, const float* __restrict kh, bool v, float* __restrict y) {
  if (relu) {
    for (int j = 0; j < H; ++j) g[j] = std::max(g[j], 0.0f);
  } else {
    for (int j = 0; j < H; ++j) g[j] = fast_tanh(g[j]);
  }
  if (!v) {
    std::memset(y, 0, H * sizeof(float));
    return;
  }
  finish_row(H, sh, hc, kh, g, y);
}

// Gradients of one row's gate math: `a` = d new h, `c` = d new c (after zoneout's share).
void lstm_grad_row(int H, const float* __restrict g, const float* __restrict sc,
                   const float* __restrict craw, const float* __restrict a,
                   const float* __restrict c, float* __restrict dp, float* __restrict dsc) {
  for (int j = 0; j < H; ++j) {
    const float i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
    const float tc = fast_tanh(craw[j]);
    const float dcell = c[j] + a[j] * o * (1.0f - tc * tc);
    dp[j] = dcell * gg * i * (1.0f - i);
    dp[H + j] = dcell * sc[j] * f * (1.0f - f);
    dp[2 * H + j] = dcell * i * (1.0f - gg * gg);
    dp[3 * H + j] = a[j] * tc * o * (1.0f - o);
    dsc[j] += dcell * f;
  }
}

void gru_grad_row(int H, const float* __restrict g, const float* __restrict sh,
                  const float* __restrict rn, const float* __restrict a, float* __restrict dp,
                  float* __restrict dr, float* __restrict dsh) {
  for (int j = 0; j < H; ++j) {
    const float rr = g[j], z = g[H + j], n = g[2 * H + j];
    const float dz = a[j] * (sh[j] - n), dn = a[j] * (1.0f - z);
    const float dnp = dn * (1.0f - n * n);
    const float drp = dnp * rn[j] * rr * (1.0f - rr), dzp = dz * z * (1.0f - z);
    dp[j] = drp;
    dp[H + j] = dzp;
    dp[2 * H + j] = dnp;
    dr[j] = drp;
    dr[H + j] = dzp;
    dr[2 * H + j] = dnp * rr;
    dsh[j] += a[j] * z;
  }
}

// ----------------------------------------------------------------------------- packed GEMM
//
// The recurrent matrix is the same at every step, so it is packed once per call into 32-column
// panels (`[n / 32][k][32]`, contiguous in the order the micro-kernel reads it) and each step's
// `C (+)= A @ B` runs an AVX-512 8x32 register-blocked micro-kernel over them: no per-call
// packing as in a general BLAS call (which dominates at these small batch sizes). Used when the
// library is compiled with AVX-512 and n, k are multiples of 32; otherwise BLAS.

constexpr int kPanel = 32;

#if defined(__AVX512F__)
constexpr bool kHavePacked = true;

// Packs the k x n matrix B (element (k, j) at b[k * sk + j * sj]) into panels.
std::vector<float> pack_panels(const float* b, int K, int N, size_t sk, size_t sj) {
  std::vector<float> out(size_t(K) * N);
  for (int p = 0; p < N / kPanel; ++p)
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < kPanel; ++j)
        out[(size_t(p) * K + k) * kPanel + j] = b[k * sk + (size_t(p) * kPanel + j) * sj];
  return out;
}

template <int MR>
inline void micro_kernel(int K, const float* __restrict a, size_t lda,
                         const float* __restrict bp, float* __restrict c, size_t ldc,
                         bool accumulate) {
  __m512 acc0[MR], acc1[MR];
  for (int r = 0; r < MR; ++r) {
    acc0[r] = accumulate ? _mm512_loadu_ps(c + r * ldc) : _mm512_setzero_ps();
    acc1[r] = accumulate ? _mm512_loadu_ps(c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp + size_t(k) * kPanel);
    const __m512 b1 = _mm512_loadu_ps(bp + size_t(k) * kPanel + 16);
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
      acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm512_storeu_ps(c + r * ldc, acc0[r]);
    _mm512_storeu_ps(c + r * ldc + 16, acc1[r]);
  }
}

// C[:, p0*32 : p1*32] (+)= A @ B for panels [p0, p1) of the packed B; A is M x K.
void packed_gemm(int M, int K, const float* a, size_t lda, const float* packed, int p0, int p1,
                 float* c, size_t ldc, bool accumulate) {
  for (int p = p0; p < p1; ++p) {
    const float* bp = packed + size_t(p) * K * kPanel;
    float* cp = c + size_t(p) * kPanel;
    int m = 0;
    for (; m + 8 <= M; m += 8)
      micro_kernel<8>(K, a + m * lda, lda, bp, cp + m * ldc, ldc, accumulate);
    const float* ar = a + m * lda;
    float* cr = cp + m * ldc;
    switch (M - m) {
      case 7: micro_kernel<7>(K, ar, lda, bp, cr, ldc, accumulate); break;
      case 6: micro_kernel<6>(K, ar, lda, bp, cr, ldc, accumulate); break;
      case 5: micro_kernel<5>(K, ar, lda, bp, cr, ldc, accumulate); break;
      case 4: micro_kernel<4>(K, ar, lda, bp, cr, ldc, accumulate); break;
      case 3: micro_kernel<3>(K, ar, lda, bp, cr, ldc, accumulate); break;
      case 2: micro_kernel<2>(K, ar, lda, bp, cr, ldc, accumulate); break;
      case 1: micro_kernel<1>(K, ar, lda, bp, cr, ldc, accumulate); break;
      default: break;
    }
  }
}
#else
constexpr bool kHavePacked = false;
std::vector<float> pack_panels(const float*, int, int, size_t, size_t) { return {}; }
void packed_gemm(int, int, const float*, size_t, const float*, int, int, float*, size_t, bool) {}
#endif

inline bool use_packed(int K, int N) {
  static const bool enabled = [] {
    const char* env = std::getenv("RNNLAB_NATIVE_GEMM");
    return !(env && std::string(env) == "blas");
  }();
  return kHavePacked && enabled && K % kPanel == 0 && N % kPanel == 0;
}

// ----------------------------------------------------------------------------- threading
//
// A step has two parallel phases (the sgemm, split by output columns; the gate math, split by
// batch rows) separated by barriers. The calling thread publishes each phase and claims its
// chunks itself; one helper task on XLA's intra-op thread pool joins when a pool thread is free
// and claims chunks too. Nothing ever waits for the helper to *start* (the pool may be busy, e.g.
// with the other direction of a bidirectional layer), so there is no deadlock and no extra
// thread: BLAS runs single-threaded inside each chunk (set by the Python loader).

struct Team {
  std::atomic<uint64_t> state{0};  // (phase << 32) | next unclaimed chunk
  std::atomic<int> done{0};        // chunks finished in the current phase
  std::atomic<int> nchunks{0};
  std::atomic<const std::function<void(int)>*> fn{nullptr};
  std::atomic<int> helper{0};  // 0 not started, 1 running, 2 gone
  std::atomic<bool> stop{false};

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

class Workers {
 public:
  Workers(ffi::ThreadPool& pool, bool parallel) {
    if (!parallel || pool.num_threads() < 2) return;
    team_ = std::make_shared<Team>();
    std::shared_ptr<Team> team = team_;
    pool.Schedule([team]() {
      int idle = 0;
      if (!team->helper.compare_exchange_strong(idle, 1)) return;
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

// Two threads only pay off once a step has enough work (measured on 2 cores: ~b*g*h >= 2^18).
inline bool worth_parallel(int B, int G, int H) { return int64_t(B) * G * H >= (1 << 18); }

ffi::Error Forward(ffi::ThreadPool pool, F32 P, F32 W, F32 c0, F32 h0, F32 valid_b, F32 reset_b,
                   F32 mask_b, F32 keep_c_b, F32 keep_h_b, F32 b_hn_b, F32 bias_b, Out ys, Out hT,
                   Out cT, Out hs_b, Out cs_b, Out hin_b, Out gates_b, Out aux_b, int32_t kind,
                   int32_t batch_major) {
  const auto pd = P.dimensions();
  if (pd.size() != 3) return ffi::Error::InvalidArgument("P must be [t, b, g]");
  const int T = pd[0], B = pd[1], G = pd[2];
  const int H = W.dimensions()[1];
  const bool lstm = kind == kLSTM, gru = kind == kGRU;
  const float *valid = opt(valid_b), *reset = opt(reset_b), *mask = opt(mask_b);
  const float *keep_c = opt(keep_c_b), *keep_h = opt(keep_h_b), *b_hn = opt(b_hn_b);
  const float* bias = gru ? nullptr : opt(bias_b);  // added to P (the GRU's bias stays in P)
  float *hs = opt(hs_b), *cs = opt(cs_b), *hin_all = opt(hin_b), *gates = opt(gates_b);
  float* aux = opt(aux_b);
  const bool save = gates != nullptr;
  const size_t BH = size_t(B) * H, BG = size_t(B) * G;
  if (T == 0 || B == 0) {
    std::memcpy(hT->typed_data(), h0.typed_data(), BH * sizeof(float));
    if (lstm) std::memcpy(cT->typed_data(), c0.typed_data(), BH * sizeof(float));
    return ffi::Error::Success();
  }

  float* hc = hT->typed_data();
  float* cc = lstm ? cT->typed_data() : nullptr;
  std::memcpy(hc, h0.typed_data(), BH * sizeof(float));
  if (lstm) std::memcpy(cc, c0.typed_data(), BH * sizeof(float));
  std::vector<float> g_scratch(save ? 0 : BG), hin_scratch(save ? 0 : BH);
  std::vector<float> rec(gru ? BG : 0), aux_scratch(save ? 0 : BH);
  std::vector<float> sh(BH), sc(lstm ? BH : 0), zeros(H, 0.0f), hn(BH);
  float* y_all = ys->typed_data();
  const float* w = W.typed_data();
  auto gates_at = [&](int t) { return save ? gates + t * BG : g_scratch.data(); };
  auto hin_at = [&](int t) { return save ? hin_all + t * BH : hin_scratch.data(); };

  // Step t's start carry (reset) and the vector that multiplies W (dropout mask), row b.
  auto prepare = [&](int t, int b) {
    const size_t row = size_t(b) * H;
    const bool r = reset && reset[size_t(t) * B + b] > 0;
    std::memcpy(sh.data() + row, r ? zeros.data() : hc + row, H * sizeof(float));
    if (lstm) std::memcpy(sc.data() + row, r ? zeros.data() : cc + row, H * sizeof(float));
    float* __restrict hrow = hin_at(t) + row;
    const float* __restrict srow = sh.data() + row;
    if (mask) {
      const float* __restrict m = mask + row;
      for (int j = 0; j < H; ++j) hrow[j] = srow[j] * m[j];
    } else {
      std::memcpy(hrow, srow, H * sizeof(float));
    }
  };
  // Columns [n0, n1) of step t's pre-activations: P[t] + h_in @ W^T (GRU: h_in @ W^T alone).
  // B = W^T (k = h, j = g): element (k, j) at w[j * H + k].
  const bool packed = use_packed(H, G);
  const std::vector<float> wp = packed ? pack_panels(w, H, G, 1, H) : std::vector<float>();
  auto matmul = [&](int t, int n0, int n1) {
    if (n1 <= n0) return;
    const float* hin = hin_at(t);
    if (packed && gru) {
      packed_gemm(B, H, hin, H, wp.data(), n0 / kPanel, n1 / kPanel, rec.data(), G, false);
      return;
    }
    if (gru) {
      sgemm(kRowMajor, kNoTrans, kTrans, B, n1 - n0, H, 1.0f, hin, H,
                        w + size_t(n0) * H, H, 0.0f, rec.data() + n0, G);
      return;
    }
    float* gt = gates_at(t);
    const float* pt = P.typed_data() + t * BG;
    for (int b = 0; b < B; ++b) {
      float* __restrict dst = gt + size_t(b) * G + n0;
      const float* __restrict src = pt + size_t(b) * G + n0;
      if (bias) {
        const float* __restrict bs = bias + n0;
        for (int j = 0; j < n1 - n0; ++j) dst[j] = src[j] + bs[j];
      } else {
        std::memcpy(dst, src, (n1 - n0) * sizeof(float));
      }
    }
    if (packed) {
      packed_gemm(B, H, hin, H, wp.data(), n0 / kPanel, n1 / kPanel, gt, G, true);
      return;
    }
    sgemm(kRowMajor, kNoTrans, kTrans, B, n1 - n0, H, 1.0f, hin, H, w + size_t(n0) * H,
                      H, 1.0f, gt + n0, G);
  };
  // The gate math of step t, row b, then the next step's inputs for that row.
  auto pointwise = [&](int t, int b) {
    float* gt = gates_at(t);
    float* at = save ? aux + t * BH : aux_scratch.data();
    const bool v = !valid || valid[size_t(t) * B + b] > 0;
    const size_t row = size_t(b) * H, off = (size_t(t) * B + b) * H;
    const float* kh = keep_h ? keep_h + off : nullptr;
    const float* kc = keep_c ? keep_c + off : nullptr;
    float* y = y_all + (batch_major ? (size_t(b) * T + t) * H : off);
    const float* shr = sh.data() + row;
    if (lstm) {
      lstm_row(H, gt + b * size_t(G), at + row, shr, sc.data() + row, hc + row, cc + row, kh, kc,
               v, hn.data() + row, y);
    } else if (gru) {
      gru_row(H, P.typed_data() + t * BG + b * size_t(G), rec.data() + b * size_t(G),
              gt + b * size_t(G), at + row, b_hn, shr, hc + row, kh, v, hn.data() + row, y);
    } else {
      elman_row(H, kind == kRelu, gt + b * size_t(G), shr, hc + row, kh, v, y);
    }
    if (save) {
      std::memcpy(hs + t * BH + row, hc + row, H * sizeof(float));
      if (lstm) std::memcpy(cs + t * BH + row, cc + row, H * sizeof(float));
    }
    if (t + 1 < T) prepare(t + 1, b);
  };

  Workers workers(pool, worth_parallel(B, G, H));
  const int n = workers.size();
  for (int b = 0; b < B; ++b) prepare(0, b);
  int t = 0;
  const std::function<void(int)> matmul_chunk = [&](int c) {
    auto [n0, n1] = chunk(c, n, G, kPanel);
    matmul(t, n0, n1);
  };
  const std::function<void(int)> pointwise_chunk = [&](int c) {
    auto [b0, b1] = chunk(c, n, B, 1);
    for (int b = b0; b < b1; ++b) pointwise(t, b);
  };
  for (; t < T; ++t) {
    workers.run(n, matmul_chunk);
    workers.run(n, pointwise_chunk);
  }
  return ffi::Error::Success();
}

// Backward. Inputs: the forward's residuals; outputs: the gradient of the projected input
// (`d_proj`, also the recurrent pre-activation's gradient except for the GRU, whose n gate
// differs: `d_rec`), and of the initial carry.
ffi::Error Backward(ffi::ThreadPool pool, F32 W, F32 c0, F32 h0, F32 valid_b, F32 reset_b,
                    F32 mask_b, F32 keep_c_b, F32 keep_h_b, F32 gates_b, F32 aux_b, F32 hs_b,
                    F32 cs_b, F32 dys_b, F32 dhT, F32 dcT, Out dproj_b, Out drec_b, Out dh0,
                    Out dc0, int32_t kind, int32_t batch_major) {
  const auto gd = gates_b.dimensions();
  const int T = gd[0], B = gd[1], G = gd[2];
  const int H = W.dimensions()[1];
  const bool lstm = kind == kLSTM, gru = kind == kGRU;
  const float *valid = opt(valid_b), *reset = opt(reset_b), *mask = opt(mask_b);
  const float *keep_c = opt(keep_c_b), *keep_h = opt(keep_h_b);
  const float *gates = gates_b.typed_data(), *aux = opt(aux_b), *hs = hs_b.typed_data();
  const float* cs = opt(cs_b);
  const float* dys = dys_b.typed_data();
  float* dproj = dproj_b->typed_data();
  float* drec = gru ? drec_b->typed_data() : dproj;
  const size_t BH = size_t(B) * H, BG = size_t(B) * G;

  float* dh = dh0->typed_data();  // running gradient of the carry after step t
  float* dc = lstm ? dc0->typed_data() : nullptr;
  std::memcpy(dh, dhT.typed_data(), BH * sizeof(float));
  if (lstm) std::memcpy(dc, dcT.typed_data(), BH * sizeof(float));
  if (T == 0 || B == 0) return ffi::Error::Success();
  std::vector<float> dsh(BH), dsc(lstm ? BH : 0), dhin(BH), dnh(BH), dnc(lstm ? BH : 0);
  const std::vector<float> zeros(H, 0.0f), ones(H, 1.0f);

  // Step t's gradient wrt its start carry, row b, into the running carry gradient (needs dhin).
  auto finish = [&](int t, int b) {
    const size_t row = size_t(b) * H;
    const bool v = !valid || valid[size_t(t) * B + b] > 0;
    const bool r = reset && reset[size_t(t) * B + b] > 0;
    if (!v) return;  // d carry_prev = d carry (unchanged)
    float* __restrict dh_r = dh + row;
    if (r) {  // the previous carry was replaced by zeros
      std::memset(dh_r, 0, H * sizeof(float));
      if (lstm) std::memset(dc + row, 0, H * sizeof(float));
      return;
    }
    const float* __restrict m = mask ? mask + row : ones.data();
    const float* __restrict s = dsh.data() + row;
    const float* __restrict d = dhin.data() + row;
    for (int j = 0; j < H; ++j) dh_r[j] = s[j] + d[j] * m[j];
    if (lstm) std::memcpy(dc + row, dsc.data() + row, H * sizeof(float));
  };
  // The gate math's gradients of step t, row b (after finishing step t + 1 for that row).
  auto pointwise = [&](int t, int b) {
    if (t + 1 < T) finish(t + 1, b);
    const float* hprev = t > 0 ? hs + (t - 1) * BH : h0.typed_data();
    const float* cprev = lstm ? (t > 0 ? cs + (t - 1) * BH : c0.typed_data()) : nullptr;
    const size_t row = size_t(b) * H, off = (size_t(t) * B + b) * H;
    const bool v = !valid || valid[size_t(t) * B + b] > 0;
    const bool r = reset && reset[size_t(t) * B + b] > 0;
    float* __restrict dp = dproj + t * BG + b * size_t(G);
    float* __restrict dr = drec + t * BG + b * size_t(G);
    float* __restrict dsh_r = dsh.data() + row;
    float* __restrict dsc_r = lstm ? dsc.data() + row : nullptr;
    if (!v) {  // padding: the carry passes through, nothing else gets a gradient
      std::fill(dp, dp + G, 0.0f);
      if (gru) std::fill(dr, dr + G, 0.0f);
      return;
    }
    // Gradient of the new carry (before zoneout); y is the new h in every cell.
    const float* __restrict dy = dys + (batch_major ? (size_t(b) * T + t) * H : off);
    const float* __restrict dh_r = dh + row;
    float* __restrict a = dnh.data() + row;
    for (int j = 0; j < H; ++j) a[j] = dh_r[j] + dy[j];
    if (lstm) std::memcpy(dnc.data() + row, dc + row, H * sizeof(float));
    if (keep_h) {
      const float* __restrict kh = keep_h + off;
      for (int j = 0; j < H; ++j) {
        dsh_r[j] = kh[j] * a[j];
        a[j] *= 1.0f - kh[j];
      }
      if (lstm) {
        const float* __restrict kc = keep_c + off;
        float* __restrict c = dnc.data() + row;
        for (int j = 0; j < H; ++j) {
          dsc_r[j] = kc[j] * c[j];
          c[j] *= 1.0f - kc[j];
        }
      }
    } else {
      std::memset(dsh_r, 0, H * sizeof(float));
      if (lstm) std::memset(dsc_r, 0, H * sizeof(float));
    }
    const float* __restrict g = gates + t * BG + b * size_t(G);
    const float* __restrict sh = r ? zeros.data() : hprev + row;
    if (lstm) {
      lstm_grad_row(H, g, r ? zeros.data() : cprev + row, aux + off, a, dnc.data() + row, dp,
                    dsc_r);
    } else if (gru) {
      gru_grad_row(H, g, sh, aux + off, a, dp, dr, dsh_r);
    } else if (kind == kRelu) {
      for (int j = 0; j < H; ++j) dp[j] = g[j] > 0.0f ? a[j] : 0.0f;
    } else {
      for (int j = 0; j < H; ++j) dp[j] = a[j] * (1.0f - g[j] * g[j]);
    }
  };

  Workers workers(pool, worth_parallel(B, G, H));
  const int n = workers.size();
  int t = T - 1;
  const std::function<void(int)> pointwise_chunk = [&](int c) {
    auto [b0, b1] = chunk(c, n, B, 1);
    for (int b = b0; b < b1; ++b) pointwise(t, b);
  };
  // d h_in = d_rec @ W (columns [n0, n1) of it).
  // B = W (k = g, j = h): element (k, j) at W[k * H + j].
  const bool packed = use_packed(G, H);
  const std::vector<float> wp =
      packed ? pack_panels(W.typed_data(), G, H, H, 1) : std::vector<float>();
  const std::function<void(int)> matmul_chunk = [&](int c) {
    auto [n0, n1] = chunk(c, n, H, kPanel);
    if (n1 <= n0) return;
    if (packed) {
      packed_gemm(B, G, drec + t * BG, G, wp.data(), n0 / kPanel, n1 / kPanel, dhin.data(), H,
                  false);
      return;
    }
    sgemm(kRowMajor, kNoTrans, kNoTrans, B, n1 - n0, G, 1.0f, drec + t * BG, G,
                      W.typed_data() + n0, H, 0.0f, dhin.data() + n0, H);
  };
  for (; t >= 0; --t) {
    workers.run(n, pointwise_chunk);
    workers.run(n, matmul_chunk);
  }
  for (int b = 0; b < B; ++b) finish(0, b);
  return ffi::Error::Success();
}

}  // namespace

// The exported symbols (the library is built with -fvisibility=hidden).
extern "C" __attribute__((visibility("default"))) void RnnlabSetSgemm(void* fn) {
  sgemm = reinterpret_cast<SgemmFn>(fn);
}

extern "C" __attribute__((visibility("default"))) XLA_FFI_Error* RnnlabForward(XLA_FFI_CallFrame*);
extern "C" __attribute__((visibility("default"))) XLA_FFI_Error* RnnlabBackward(
    XLA_FFI_CallFrame*);

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
                                  .Attr<int32_t>("batch_major"));

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
                                  .Attr<int32_t>("batch_major"));
