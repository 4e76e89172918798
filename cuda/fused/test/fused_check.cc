// Standalone GPU check of the fused family (no Python needed): correctness against a float64
// CPU reference built on window.h (brute force over each query's window), with poisoned outputs,
// over 1-D/2-D/3-D, dilation, stride, causal, GQA/MQA, odd extents, kernel == extent, head_dim
// 32/64/128 and f16/bf16/f32; determinism of the backward; then timings of the benchmark
// problems (bf16), with a sampled forward check on each.
//
// CUDA source named .cc so that the extension's glob (cuda/fused/**/*.cu) leaves it out.
// Build (from the repo root):
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I cuda/common \
//        cuda/fused/*.cu cuda/hopper/*.cu cuda/repair/*.cu -x cu cuda/fused/test/fused_check.cc \
//        -o fused_check
// or run cuda/fused/test/run_device.sh (builds it when no prebuilt binary runs).
// Run: ./fused_check [--no-bench] [--no-check] [--only CASE] [--bench PROBLEM] [--reps N] [--throughput]
//      [--fwd-only] [--handler] [--profile] [--hopper] [--rd] [--no-box]
//      (--profile: one forward + backward per selected problem, for ncu; --hopper: forward and
//      backward by the Hopper family, cuda/hopper/*.cu linked in;
//      --rd: as --hopper, with the Hopper backward that forms delta in its dQ kernel (hopper::bwd_rd)
//      wherever the family runs, and a check of the delta it wrote (the bench lines say whether
//      cuda/hopper/rd_rule.h picks it for the problem);
//      --handler: time what an FFI handler launches per call: arm, the kernels, the repair launch,
//      cuda/repair/*.cu linked in; --cold: evict L2 before each timed launch, as a benchmark that
//      rotates its inputs sees them; not with --throughput; --no-box: the tiled kernels only, not
//      the resident-box ones, for A/B runs and to check the tiled kernels on small windows;
//      --fwd-only: time no backward, so that a long --throughput run measures the forward at the
//      clocks a sustained run of it settles to, as the JAX suite's rows do)
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../../hopper/rd_rule.h"
#include "../../repair/repair.h"
#include "../kernel_fwd.h"
#include "../launch.h"
#include "families.h"
#include "problem.h"
#include "window.h"

using namespace jax_na;

#define CK(x)                                                                                \
  do {                                                                                       \
    cudaError_t e_ = (x);                                                                    \
    if (e_ != cudaSuccess) {                                                                 \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__,     \
              __LINE__, #x);                                                                 \
      exit(2);                                                                               \
    }                                                                                        \
  } while (0)

namespace {

bool g_handler = false;  // --handler: each call as the FFI handler makes it (arm, run, repair)

// The fused forward, with the arm and the repair launch the handler adds under --handler.
cudaError_t fused_fwd(const Problem& p, const FwdArgs& a, cudaStream_t s) {
  if (g_handler)
    if (cudaError_t e = repair::arm(a.nonfinite, s); e != cudaSuccess) return e;
  const cudaError_t e = fused::fwd(p, a, s);
  return e != cudaSuccess || !g_handler ? e : repair::fwd(p, a, s);
}

// --hopper: the Hopper kernels where they run (f16/bf16, head_dim 64/128), else the fused ones,
// as jax_na routes backend="cuda-hopper". The Hopper forward arms what it uses and repairs its
// results itself.
cudaError_t hopper_or_fused_fwd(const Problem& p, const FwdArgs& a, cudaStream_t s) {
  const cudaError_t e = hopper::fwd(p, a, s);
  return e == cudaErrorNotSupported ? fused_fwd(p, a, s) : e;
}

// The backwards take delta's inputs too (DeltaArgs); only --rd's reads them.
cudaError_t fused_bwd(const Problem& p, const BwdArgs& a, const DeltaArgs&, cudaStream_t s) {
  return fused::bwd(p, a, s);
}

cudaError_t hopper_or_fused_bwd(const Problem& p, const BwdArgs& a, const DeltaArgs&,
                                cudaStream_t s) {
  const cudaError_t e = hopper::bwd(p, a, s);
  return e == cudaErrorNotSupported ? fused::bwd(p, a, s) : e;
}

bool g_rd_ran = false;  // the last backward was hopper::bwd_rd: check the delta it wrote

// --rd: the Hopper backward that forms delta in its dQ kernel (from d.out and d.dlse into
// d.delta) where the family runs, whatever rd_rule.h says; else the fused one (a.delta).
cudaError_t hopper_rd_or_fused_bwd(const Problem& p, const BwdArgs& a, const DeltaArgs& d,
                                   cudaStream_t s) {
  const cudaError_t e = hopper::bwd_rd(p, a, d, s);
  g_rd_ran = e != cudaErrorNotSupported;
  return g_rd_ran ? e : fused::bwd(p, a, s);
}

// The forward and backward under test.
cudaError_t (*g_fwd)(const Problem&, const FwdArgs&, cudaStream_t) = fused_fwd;
cudaError_t (*g_bwd)(const Problem&, const BwdArgs&, const DeltaArgs&, cudaStream_t) = fused_bwd;

// The kernels' non-finite flag (FwdArgs::nonfinite), then FwdArgs::tile_counter: three device
// words, zeroed by each call here (the kernels leave the counter zero).
unsigned* nonfinite_flag() {
  static unsigned* flag = nullptr;
  if (!flag) CK(cudaMalloc(&flag, 3 * sizeof(unsigned)));
  CK(cudaMemset(flag, 0, 3 * sizeof(unsigned)));
  return flag;
}

unsigned read_flag(const unsigned* flag) {
  unsigned h = 0;
  CK(cudaMemcpy(&h, flag, sizeof(h), cudaMemcpyDeviceToHost));
  return h;
}

struct Case {
  std::string name;
  int rank;
  int64_t B;
  int L[3];
  int H, Hkv, D;
  int k[3], s[3], d[3], c[3];
  DType dt;
};

const char* dtname(DType t) { return t == DType::kF32 ? "f32" : (t == DType::kF16 ? "f16" : "bf16"); }
size_t esize(DType t) { return t == DType::kF32 ? 4 : 2; }

Problem problem_of(const Case& c) {
  Problem p;
  p.rank = c.rank;
  p.batch = c.B;
  p.heads = c.H;
  p.heads_kv = c.Hkv;
  p.head_dim = c.D;
  for (int i = 0; i < 3; ++i) p.dim[i] = DimParams{1, 1, 1, 1, false};
  for (int i = 0; i < c.rank; ++i)
    p.dim[3 - c.rank + i] = DimParams{c.L[i], c.k[i], c.s[i], c.d[i], c.c[i] != 0};
  p.scale = 1.0f / std::sqrt(float(c.D));
  p.dtype = c.dt;
  return p;
}

// ---- host conversion --------------------------------------------------------------------
uint16_t to_bits(float x, DType t) {
  if (t == DType::kF16) {
    __half h = __float2half_rn(x);
    uint16_t b;
    memcpy(&b, &h, 2);
    return b;
  }
  __nv_bfloat16 h = __float2bfloat16_rn(x);
  uint16_t b;
  memcpy(&b, &h, 2);
  return b;
}
float from_bits(uint16_t b, DType t) {
  if (t == DType::kF16) {
    __half h;
    memcpy(&h, &b, 2);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  memcpy(&h, &b, 2);
  return __bfloat162float(h);
}

// Device buffer of n elements of dtype t, from/to host floats.
struct DBuf {
  void* p = nullptr;
  size_t n = 0;
  DType t;
  DBuf(size_t n_, DType t_) : n(n_), t(t_) { CK(cudaMalloc(&p, std::max<size_t>(n * esize(t), 16))); }
  ~DBuf() { cudaFree(p); }
  void upload(std::vector<float>& h) {  // rounds h to the dtype in place
    if (t == DType::kF32) {
      CK(cudaMemcpy(p, h.data(), n * 4, cudaMemcpyHostToDevice));
      return;
    }
    std::vector<uint16_t> b(n);
    for (size_t i = 0; i < n; ++i) {
      b[i] = to_bits(h[i], t);
      h[i] = from_bits(b[i], t);
    }
    CK(cudaMemcpy(p, b.data(), n * 2, cudaMemcpyHostToDevice));
  }
  std::vector<float> download() const {
    std::vector<float> h(n);
    if (t == DType::kF32) {
      CK(cudaMemcpy(h.data(), p, n * 4, cudaMemcpyDeviceToHost));
      return h;
    }
    std::vector<uint16_t> b(n);
    CK(cudaMemcpy(b.data(), p, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) h[i] = from_bits(b[i], t);
    return h;
  }
  void poison() { CK(cudaMemset(p, 0xff, n * esize(t))); }  // NaN in every float format
};

// ---- forward tile-configuration variants (A/B experiments, bf16 only) ------------------------
// Same kernel template as production with other (rows per warp, keys per tile); launched here
// so that production instantiates only what its dispatch reaches.
template <int D, int MT, int BN>
cudaError_t fwd_variant_impl(const Problem& pr, const FwdArgs& a) {
  fused::KernelParams p;
  cudaError_t e = fused::make_fwd_params(pr, a, p);
  if (e != cudaSuccess) return e;
  using Cfg = fused::FwdConfig<__nv_bfloat16, D, MT, BN>;
  p.ts = fused::choose_query_stationary(p, Cfg::kLogRows, Cfg::kLogCols);
  fused::set_mask_constants(p);
  fused::set_grid(p, p.ts.qlog);
  return fused::launch_ctas(fused::fused_fwd_kernel<__nv_bfloat16, D, MT, BN>, p,
                            p.batch * p.heads * p.groups * p.tiles, Cfg::kThreads, Cfg::kSmem, 0);
}

struct Variant {
  const char* name;
  int D;
  cudaError_t (*fn)(const Problem&, const FwdArgs&);
};
// Measured on H100 (2026-11-26): two row blocks per warp with 32-key tiles was 5-12% faster
// on 1-D / strided problems (A1, A1c, A2s) and 3-24% slower on 2-D / 3-D large-window ones
// (its 128-query tiles see larger key boxes); production keeps (1, 64).
const Variant kVariants[] = {
    {"mt2/bn32", 128, fwd_variant_impl<128, 2, 32>},
};

// ---- reference ----------------------------------------------------------------------------
struct Geom {
  int L[3], k[3], s[3], d[3];
  bool c[3];
  int64_t N;
  explicit Geom(const Problem& p) {
    for (int i = 0; i < 3; ++i) {
      L[i] = p.dim[i].extent, k[i] = p.dim[i].kernel, s[i] = p.dim[i].stride;
      d[i] = p.dim[i].dilation, c[i] = p.dim[i].causal;
    }
    N = int64_t(L[0]) * L[1] * L[2];
  }
  void coords(int64_t t, int (&x)[3]) const {
    x[2] = int(t % L[2]);
    x[1] = int((t / L[2]) % L[1]);
    x[0] = int(t / (int64_t(L[1]) * L[2]));
  }
  // Neighbour tokens of query token t.
  void neighbours(int64_t t, std::vector<int64_t>& out) const {
    int x[3];
    coords(t, x);
    Window w[3];
    int g[3];
    for (int i = 0; i < 3; ++i) {
      w[i] = window_of(x[i], DimParams{L[i], k[i], s[i], d[i], c[i]});
      g[i] = x[i] % d[i];
    }
    out.clear();
    for (int a = w[0].start; a < w[0].end; ++a)
      for (int b = w[1].start; b < w[1].end; ++b)
        for (int e = w[2].start; e < w[2].end; ++e)
          out.push_back((int64_t(a * d[0] + g[0]) * L[1] + (b * d[1] + g[1])) * L[2] + (e * d[2] + g[2]));
  }
};

template <typename F>
void parallel_for(int64_t n, F f) {
  const int nt = std::max(1u, std::min(32u, std::thread::hardware_concurrency()));
  std::vector<std::thread> th;
  for (int t = 0; t < nt; ++t)
    th.emplace_back([&, t] {
      for (int64_t i = t; i < n; i += nt) f(i);
    });
  for (auto& x : th) x.join();
}

// Forward reference for query rows (b, token, h) listed in `rows` (row = (b*N+tok)*H+h).
void ref_fwd_rows(const Problem& p, const std::vector<float>& q, const std::vector<float>& k,
                  const std::vector<float>& v, const std::vector<int64_t>& rows,
                  std::vector<double>& out, std::vector<double>& lse) {
  const Geom g(p);
  const int D = int(p.head_dim), H = int(p.heads), Hkv = int(p.heads_kv), G = H / Hkv;
  out.assign(rows.size() * D, 0.0);
  lse.assign(rows.size(), 0.0);
  parallel_for(int64_t(rows.size()), [&](int64_t ri) {
    const int64_t row = rows[ri];
    const int h = int(row % H);
    const int64_t tok = (row / H) % g.N, b = row / H / g.N;
    std::vector<int64_t> nb;
    g.neighbours(tok, nb);
    std::vector<double> s(nb.size());
    double m = -INFINITY;
    for (size_t j = 0; j < nb.size(); ++j) {
      const float* kr = &k[((b * g.N + nb[j]) * Hkv + h / G) * D];
      const float* qr = &q[row * D];
      double acc = 0;
      for (int e = 0; e < D; ++e) acc += double(qr[e]) * kr[e];
      s[j] = acc * p.scale;
      m = std::max(m, s[j]);
    }
    double l = 0;
    for (auto& x : s) l += std::exp(x - m);
    lse[ri] = m + std::log(l);
    for (size_t j = 0; j < nb.size(); ++j) {
      const double pj = std::exp(s[j] - lse[ri]);
      const float* vr = &v[((b * g.N + nb[j]) * Hkv + h / G) * D];
      for (int e = 0; e < D; ++e) out[ri * D + e] += pj * vr[e];
    }
  });
}

void ref_bwd(const Problem& p, const std::vector<float>& q, const std::vector<float>& k,
             const std::vector<float>& v, const std::vector<float>& dout,
             const std::vector<float>& lse, const std::vector<float>& delta,
             std::vector<double>& dq, std::vector<double>& dk, std::vector<double>& dv) {
  const Geom g(p);
  const int D = int(p.head_dim), H = int(p.heads), Hkv = int(p.heads_kv), G = H / Hkv;
  const int64_t B = p.batch;
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  parallel_for(B * Hkv, [&](int64_t bh) {  // one (batch, kv head) per task: no races
    const int64_t b = bh / Hkv;
    const int hk = int(bh % Hkv);
    std::vector<int64_t> nb;
    for (int j = 0; j < G; ++j) {
      const int h = hk * G + j;
      for (int64_t t = 0; t < g.N; ++t) {
        const int64_t row = (b * g.N + t) * H + h;
        g.neighbours(t, nb);
        for (int64_t kt : nb) {
          const int64_t kr = (b * g.N + kt) * Hkv + hk;
          double sd = 0, dd = 0;
          for (int e = 0; e < D; ++e) {
            sd += double(q[row * D + e]) * k[kr * D + e];
            dd += double(dout[row * D + e]) * v[kr * D + e];
          }
          const double pr = std::exp(sd * p.scale - double(lse[row]));
          const double ds = pr * (dd - double(delta[row]));
          for (int e = 0; e < D; ++e) {
            dq[row * D + e] += p.scale * ds * k[kr * D + e];
            dk[kr * D + e] += p.scale * ds * q[row * D + e];
            dv[kr * D + e] += pr * dout[row * D + e];
          }
        }
      }
    }
  });
}

struct Err {
  double rel = 0;
  int64_t bad = 0;  // non-finite entries
};

Err compare(const std::vector<float>& got, const std::vector<double>& want) {
  Err e;
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) {
      ++e.bad;
      continue;
    }
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  e.rel = std::sqrt(num / std::max(den, 1e-300));
  return e;
}

double max_abs(const std::vector<float>& got, const std::vector<double>& want, int64_t& bad) {
  double m = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) {
      ++bad;
      continue;
    }
    m = std::max(m, std::fabs(got[i] - want[i]));
  }
  return m;
}

struct Tol {
  double out, lse, grad;
};
Tol tol_of(DType t) {
  if (t == DType::kF32) return {2e-5, 1e-4, 1e-4};
  if (t == DType::kF16) return {4e-3, 2e-3, 1e-2};
  return {1.2e-2, 1e-2, 3e-2};
}

std::mt19937_64 g_rng(20261126);

std::vector<float> randn(size_t n) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> h(n);
  for (auto& x : h) x = nd(g_rng);
  return h;
}

int g_failed = 0;

void run_case(const Case& cs) {
  const Problem p = problem_of(cs);
  const Geom g(p);
  const int64_t nq = cs.B * g.N * cs.H * cs.D, nkv = cs.B * g.N * cs.Hkv * cs.D, nrow = cs.B * g.N * cs.H;
  std::vector<float> hq = randn(nq), hk = randn(nkv), hv = randn(nkv), hdo = randn(nq);
  DBuf q(nq, cs.dt), k(nkv, cs.dt), v(nkv, cs.dt), dout(nq, cs.dt), out(nq, cs.dt), dq(nq, cs.dt),
      dk(nkv, cs.dt), dv(nkv, cs.dt), lse(nrow, DType::kF32), lse_in(nrow, DType::kF32),
      delta(nrow, DType::kF32), dlse(nrow, DType::kF32), delta_rd(nrow, DType::kF32);
  q.upload(hq), k.upload(hk), v.upload(hv), dout.upload(hdo);
  out.poison(), lse.poison();
  unsigned* const flag = nonfinite_flag();
  FwdArgs fa{q.p, k.p, v.p, out.p, static_cast<float*>(lse.p), flag, flag + 1};
  CK(g_fwd(p, fa, 0));
  CK(cudaDeviceSynchronize());
  std::vector<int64_t> rows(nrow);
  for (int64_t i = 0; i < nrow; ++i) rows[i] = i;
  std::vector<double> rout, rlse;
  ref_fwd_rows(p, hq, hk, hv, rows, rout, rlse);
  const Err eo = compare(out.download(), rout);
  int64_t lbad = 0;
  const double el = max_abs(lse.download(), rlse, lbad);

  // Backward inputs: the reference lse, a random dlse, delta = rowsum(dout * out_ref) - dlse
  // (--rd: delta_rd, formed by the kernels from the forward's out, is checked against it).
  std::vector<float> hl(nrow), hd(nrow), hdl(nrow);
  std::normal_distribution<float> nd(0.f, 0.3f);
  for (int64_t r = 0; r < nrow; ++r) {
    hl[r] = float(rlse[r]);
    double acc = 0;
    for (int e = 0; e < cs.D; ++e) acc += double(hdo[r * cs.D + e]) * rout[r * cs.D + e];
    hdl[r] = nd(g_rng);
    hd[r] = float(acc) - hdl[r];
  }
  lse_in.upload(hl), delta.upload(hd), dlse.upload(hdl);
  dq.poison(), dk.poison(), dv.poison(), delta_rd.poison();
  const size_t ws = fused::bwd_workspace_bytes(p);
  void* wsp = nullptr;
  if (ws) CK(cudaMalloc(&wsp, ws));
  BwdArgs ba{q.p, k.p, v.p, dout.p, static_cast<float*>(lse_in.p), static_cast<float*>(delta.p),
             dq.p, dk.p, dv.p, wsp, fa.nonfinite};
  const DeltaArgs da{out.p, static_cast<float*>(dlse.p), static_cast<float*>(delta_rd.p)};
  g_rd_ran = false;
  CK(g_bwd(p, ba, da, 0));
  CK(cudaDeviceSynchronize());
  const std::vector<float> gq = dq.download(), gk = dk.download(), gv = dv.download();
  double ed = 0;  // the RD delta's largest error, relative to 1 + |delta|
  if (g_rd_ran) {
    const std::vector<float> gd = delta_rd.download();
    for (int64_t r = 0; r < nrow; ++r)
      ed = std::max(ed, std::isfinite(gd[r]) ? std::fabs(double(gd[r]) - hd[r]) / (1.0 + std::fabs(hd[r]))
                                             : INFINITY);
  }
  // Determinism: a second run must match bit for bit.
  dq.poison(), dk.poison(), dv.poison();
  CK(g_bwd(p, ba, da, 0));
  CK(cudaDeviceSynchronize());
  const bool det = gq == dq.download() && gk == dk.download() && gv == dv.download();
  const bool flagged = read_flag(fa.nonfinite) != 0;  // finite inputs must never raise it
  if (wsp) cudaFree(wsp);
  std::vector<double> rdq, rdk, rdv;
  ref_bwd(p, hq, hk, hv, hdo, hl, hd, rdq, rdk, rdv);
  const Err eq = compare(gq, rdq), ek = compare(gk, rdk), ev = compare(gv, rdv);
  const Tol t = tol_of(cs.dt);
  const bool ok = eo.bad == 0 && lbad == 0 && eq.bad == 0 && ek.bad == 0 && ev.bad == 0 &&
                  eo.rel <= t.out && el <= t.lse && eq.rel <= t.grad && ek.rel <= t.grad &&
                  ev.rel <= t.grad && ed <= t.grad && det && !flagged;
  if (!ok) ++g_failed;
  if (cs.dt == DType::kBF16) {
    for (const Variant& var : kVariants) {
      if (var.D != cs.D) continue;
      out.poison(), lse.poison();
      CK(var.fn(p, fa));
      CK(cudaDeviceSynchronize());
      const Err vo = compare(out.download(), rout);
      int64_t vb = 0;
      const double vl = max_abs(lse.download(), rlse, vb);
      const bool vok = vo.bad == 0 && vb == 0 && vo.rel <= t.out && vl <= t.lse;
      if (!vok) ++g_failed;
      printf("  variant %-8s fwd: out %.1e lse %.1e nonfinite %lld/%lld  %s\n", var.name, vo.rel, vl,
             (long long)vo.bad, (long long)vb, vok ? "ok" : "FAIL");
    }
  }
  char rd[32] = "";
  if (g_rd_ran) snprintf(rd, sizeof(rd), " rd delta %.1e", ed);
  printf("%-34s %-4s D=%-3d out %.1e lse %.1e dq %.1e dk %.1e dv %.1e%s nonfinite %lld/%lld/%lld/%lld/%lld det %s%s  %s\n",
         cs.name.c_str(), dtname(cs.dt), cs.D, eo.rel, el, eq.rel, ek.rel, ev.rel, rd,
         (long long)eo.bad, (long long)lbad, (long long)eq.bad, (long long)ek.bad,
         (long long)ev.bad, det ? "yes" : "NO", flagged ? " FLAG RAISED" : "", ok ? "ok" : "FAIL");
  fflush(stdout);
}

// ---- benchmark --------------------------------------------------------------------------
__global__ void fill_random(uint16_t* p, int64_t n, uint64_t seed, int is_bf16) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    uint64_t x = (uint64_t(i) + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    // sum of 4 uniforms -> roughly normal, unit variance
    float s = 0;
    for (int j = 0; j < 4; ++j) s += float((x >> (16 * j)) & 0xffff) / 65535.f - 0.5f;
    const float val = s * 1.7320508f;
    if (is_bf16) {
      __nv_bfloat16 h = __float2bfloat16_rn(val);
      p[i] = *reinterpret_cast<uint16_t*>(&h);
    } else {
      __half h = __float2half_rn(val);
      p[i] = *reinterpret_cast<uint16_t*>(&h);
    }
  }
}

void fill(DBuf& b, uint64_t seed) {
  fill_random<<<1024, 256>>>(static_cast<uint16_t*>(b.p), int64_t(b.n), seed, b.t == DType::kBF16);
  CK(cudaGetLastError());
}

bool g_throughput = false;  // --throughput: reps launches back to back, one timing
bool g_cold = false;        // --cold: each timed launch starts with nothing of its inputs in L2
// Timed launches go to a stream of their own, as XLA's do (programmatic dependent launch and
// the tail of each launch behave there as they do under JAX, not as on the legacy stream).
cudaStream_t g_stream = nullptr;

// Overwrite a buffer larger than L2 (50 MB on an H100) on the timing stream.
void evict_l2() {
  static void* junk = nullptr;
  constexpr size_t kBytes = size_t(256) << 20;
  if (!junk) CK(cudaMalloc(&junk, kBytes));
  CK(cudaMemsetAsync(junk, 0x5a, kBytes, g_stream));
}

// One forward (backward) call as timed: the kernels alone, or with the handler's arm and repair
// launches around them (cuda/ffi/cuda_handlers.cu run_repaired).
cudaError_t timed_fwd(const Problem& p, const FwdArgs& a) {
  return g_fwd(p, a, g_stream);  // arm and repair, where the handler adds them, are fused_fwd's
}

cudaError_t timed_bwd(const Problem& p, const BwdArgs& a, const DeltaArgs& d) {
  if (!g_handler) return g_bwd(p, a, d, g_stream);
  if (cudaError_t e = repair::arm(a.nonfinite, g_stream); e != cudaSuccess) return e;
  if (cudaError_t e = g_bwd(p, a, d, g_stream); e != cudaSuccess) return e;
  return repair::bwd(p, a, g_stream);
}

template <typename F>
double time_ms(F f, int reps) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  f();
  f();
  CK(cudaDeviceSynchronize());
  if (g_throughput) {
    CK(cudaEventRecord(a, g_stream));
    for (int r = 0; r < reps; ++r) f();
    CK(cudaEventRecord(b, g_stream));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms / reps;
  }
  std::vector<float> ts;
  for (int r = 0; r < reps; ++r) {
    if (g_cold) evict_l2();  // before the first event: not timed
    CK(cudaEventRecord(a, g_stream));
    f();
    CK(cudaEventRecord(b, g_stream));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms);
  }
  std::sort(ts.begin(), ts.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ts[ts.size() / 2];
}

struct BenchRow {
  std::string name;
  double fwd_ms, bwd_ms, fwd_tf, fb_tf, chk;
};
std::vector<BenchRow> g_bench;

std::string g_bench_only;
int g_reps = 0;         // override of the per-problem repetitions
bool g_fwd_only = false;  // --fwd-only: no backward timings
bool g_profile = false;  // one forward + one backward, no timing (for ncu)

void bench(const Case& cs, bool do_bwd, int reps) {
  if (!g_bench_only.empty() && cs.name.find(g_bench_only) == std::string::npos) return;
  if (g_reps > 0) reps = g_reps;
  do_bwd = do_bwd && !g_fwd_only;
  const Problem p = problem_of(cs);
  const Geom g(p);
  const int64_t nq = cs.B * g.N * cs.H * cs.D, nkv = cs.B * g.N * cs.Hkv * cs.D, nrow = cs.B * g.N * cs.H;
  DBuf q(nq, cs.dt), k(nkv, cs.dt), v(nkv, cs.dt), out(nq, cs.dt), lse(nrow, DType::kF32);
  fill(q, 1), fill(k, 2), fill(v, 3);
  out.poison(), lse.poison();
  unsigned* const flag = nonfinite_flag();
  FwdArgs fa{q.p, k.p, v.p, out.p, static_cast<float*>(lse.p), flag, flag + 1};
  // The backward's buffers (delta and dlse zero; --rd writes delta itself).
  struct BwdBufs {
    DBuf dout, dq, dk, dv, delta, dlse;
    BwdArgs a;
    DeltaArgs d;
    BwdBufs(int64_t nq, int64_t nkv, int64_t nrow, DType t, const DBuf& q, const DBuf& k,
            const DBuf& v, const DBuf& out, const DBuf& lse, unsigned* nonfinite)
        : dout(nq, t), dq(nq, t), dk(nkv, t), dv(nkv, t), delta(nrow, DType::kF32),
          dlse(nrow, DType::kF32) {
      fill(dout, 4);
      CK(cudaMemset(delta.p, 0, nrow * 4));
      CK(cudaMemset(dlse.p, 0, nrow * 4));
      a = BwdArgs{q.p, k.p, v.p, dout.p, static_cast<float*>(lse.p), static_cast<float*>(delta.p),
                  dq.p, dk.p, dv.p, nullptr, nonfinite};
      d = DeltaArgs{out.p, static_cast<float*>(dlse.p), static_cast<float*>(delta.p)};
    }
  };
  if (g_profile) {
    CK(g_fwd(p, fa, 0));
    BwdBufs b(nq, nkv, nrow, cs.dt, q, k, v, out, lse, fa.nonfinite);
    CK(g_bwd(p, b.a, b.d, 0));
    CK(cudaDeviceSynchronize());
    printf("profiled %s\n", cs.name.c_str());
    return;
  }
  const double f_ms = time_ms([&] { CK(timed_fwd(p, fa)); }, reps);
  CK(cudaDeviceSynchronize());
  // Sampled forward check: 64 random query rows against the float64 reference.
  double chk = 0;
  {
    std::vector<float> hq = q.download(), hk = k.download(), hv = v.download(), ho = out.download(),
                       hl = lse.download();
    std::vector<int64_t> rows;
    std::uniform_int_distribution<int64_t> ud(0, nrow - 1);
    for (int i = 0; i < 64; ++i) rows.push_back(ud(g_rng));
    std::vector<double> ro, rl;
    ref_fwd_rows(p, hq, hk, hv, rows, ro, rl);
    std::vector<float> go(rows.size() * cs.D), gl(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      for (int e = 0; e < cs.D; ++e) go[i * cs.D + e] = ho[rows[i] * cs.D + e];
      gl[i] = hl[rows[i]];
    }
    const Err e = compare(go, ro);
    int64_t lb = 0;
    const double el = max_abs(gl, rl, lb);
    chk = (e.bad || lb) ? INFINITY : std::max(e.rel, el);
    if (!(chk <= tol_of(cs.dt).out)) ++g_failed;
  }
  int64_t kk = 1;
  for (int i = 0; i < cs.rank; ++i) kk *= cs.k[i];
  const double flops = 4.0 * cs.B * cs.H * double(g.N) * double(kk) * cs.D;
  if (cs.dt == DType::kBF16) {
    for (const Variant& var : kVariants) {
      if (var.D != cs.D) continue;
      const double v_ms = time_ms([&] { CK(var.fn(p, fa)); }, reps);
      printf("  variant %-8s fwd %9.3f ms (%6.1f TF/s)  vs production %.3f ms\n", var.name, v_ms,
             flops / v_ms * 1e-9, f_ms);
    }
  }
  double b_ms = 0;
  if (do_bwd) {
    BwdBufs b(nq, nkv, nrow, cs.dt, q, k, v, out, lse, fa.nonfinite);
    b_ms = time_ms([&] { CK(timed_bwd(p, b.a, b.d)); }, std::max(3, reps / 2));
    CK(cudaDeviceSynchronize());
  }
  g_bench.push_back({cs.name, f_ms, b_ms, flops / f_ms * 1e-9,
                     do_bwd ? 3.5 * flops / (f_ms + b_ms) * 1e-9 : 0.0, chk});
  printf("bench %-28s fwd %9.3f ms (%6.1f TF/s)  bwd %9.3f ms  fwd+bwd %9.3f ms (%6.1f TF/s)  check %.1e%s\n",
         cs.name.c_str(), f_ms, flops / f_ms * 1e-9, b_ms, f_ms + b_ms,
         do_bwd ? 3.5 * flops / (f_ms + b_ms) * 1e-9 : 0.0, chk,
         g_bwd != hopper_rd_or_fused_bwd ? "" : hopper::rd_pays(p) ? "  rd_rule: yes" : "  rd_rule: no");
  fflush(stdout);
}

Case mk(std::string name, int rank, int64_t B, std::vector<int> L, int H, int Hkv, int D,
        std::vector<int> k, std::vector<int> s, std::vector<int> d, std::vector<int> c, DType dt) {
  Case cs{};
  cs.name = name, cs.rank = rank, cs.B = B, cs.H = H, cs.Hkv = Hkv, cs.D = D, cs.dt = dt;
  for (int i = 0; i < rank; ++i) {
    cs.L[i] = L[i];
    cs.k[i] = k.size() == 1 ? k[0] : k[i];
    cs.s[i] = s.size() == 1 ? s[0] : s[i];
    cs.d[i] = d.size() == 1 ? d[0] : d[i];
    cs.c[i] = c.size() == 1 ? c[0] : c[i];
  }
  return cs;
}

}  // namespace

int main(int argc, char** argv) {
  bool do_check = true, do_bench = true;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--no-bench")) do_bench = false;
    if (!strcmp(argv[i], "--no-check")) do_check = false;
    if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
    if (!strcmp(argv[i], "--bench") && i + 1 < argc) g_bench_only = argv[++i];
    if (!strcmp(argv[i], "--reps") && i + 1 < argc) g_reps = atoi(argv[++i]);
    if (!strcmp(argv[i], "--profile")) g_profile = true;
    if (!strcmp(argv[i], "--throughput")) g_throughput = true;
    if (!strcmp(argv[i], "--fwd-only")) g_fwd_only = true;
    if (!strcmp(argv[i], "--handler")) g_handler = true;
    if (!strcmp(argv[i], "--cold")) g_cold = true;
    if (!strcmp(argv[i], "--hopper")) g_fwd = hopper_or_fused_fwd, g_bwd = hopper_or_fused_bwd;
    if (!strcmp(argv[i], "--rd")) g_fwd = hopper_or_fused_fwd, g_bwd = hopper_rd_or_fused_bwd;
    // The tiled kernels only (resident_box.h): A/B runs, and their checks on small windows.
    if (!strcmp(argv[i], "--no-box")) setenv("JAX_NA_FUSED_RESIDENT_BOX", "0", 1);
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  CK(cudaStreamCreate(&g_stream));  // blocking: ordered with what runs on the legacy stream
  printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  const DType F16 = DType::kF16, BF = DType::kBF16, F32 = DType::kF32;

  if (do_check) {
    // Unsupported head_dim must be refused without launching.
    {
      Case cs = mk("unsupported-d48", 1, 1, {16}, 1, 1, 48, {3}, {1}, {1}, {0}, BF);
      FwdArgs fa{nullptr, nullptr, nullptr, nullptr, nullptr};
      const cudaError_t e = g_fwd(problem_of(cs), fa, 0);
      printf("%-34s -> %s  %s\n", cs.name.c_str(), cudaGetErrorName(e), e == cudaErrorNotSupported ? "ok" : "FAIL");
      if (e != cudaErrorNotSupported) ++g_failed;
    }
    std::vector<Case> cases = {
        mk("1d L100 k7", 1, 2, {100}, 2, 2, 64, {7}, {1}, {1}, {0}, F16),
        mk("1d causal L130 k17", 1, 1, {130}, 2, 2, 32, {17}, {1}, {1}, {1}, BF),
        mk("1d L97 k9 d3 s2 gqa4/2", 1, 2, {97}, 4, 2, 128, {9}, {2}, {3}, {0}, BF),
        mk("1d L5 k2 (tiny)", 1, 3, {5}, 1, 1, 32, {2}, {1}, {1}, {0}, F16),
        mk("1d causal L3000 k257 s16", 1, 1, {3000}, 1, 1, 64, {257}, {16}, {1}, {1}, F16),
        mk("1d L600 k600 (=extent)", 1, 1, {600}, 2, 1, 128, {600}, {1}, {1}, {0}, BF),
        mk("2d 23x37 k5,7 d2,1 s1,3", 2, 1, {23, 37}, 2, 2, 32, {5, 7}, {1, 3}, {2, 1}, {0}, BF),
        mk("2d 56x56 k7 (V1 slice)", 2, 1, {56, 56}, 2, 2, 32, {7}, {1}, {1}, {0}, BF),
        mk("2d 56x56 k7 d8 (V2 slice)", 2, 1, {56, 56}, 2, 2, 32, {7}, {1}, {8}, {0}, BF),
        mk("2d 20x33 k4,6 causal0 mqa3", 2, 2, {20, 33}, 3, 1, 64, {4, 6}, {1}, {1}, {1, 0}, F16),
        mk("2d 12x12 k12 s4,3", 2, 1, {12, 12}, 2, 2, 128, {12}, {4, 3}, {1}, {0}, BF),
        mk("2d 40x40 k31", 2, 1, {40, 40}, 1, 1, 128, {31}, {1}, {1}, {0}, BF),
        // Hopper: 128-key 2-D tiles, masks by the tensor core (kernel_fwd_ws.h kBias).
        mk("2d 80x96 k65,70 (bias masks)", 2, 2, {80, 96}, 2, 2, 128, {65, 70}, {1}, {1}, {0}, BF),
        mk("2d 7x9 k7,2", 2, 2, {7, 9}, 2, 2, 64, {7, 2}, {1}, {1}, {0}, BF),
        mk("2d 30x30 k9 causal s3", 2, 1, {30, 30}, 2, 2, 64, {9}, {3}, {1}, {1}, BF),
        mk("3d 6x10x13 k3,5,4 d1,2,1 s1,1,2 c", 3, 1, {6, 10, 13}, 2, 2, 64, {3, 5, 4}, {1, 1, 2}, {1, 2, 1}, {1, 0, 0}, BF),
        mk("3d 8x8x8 k8 (=extent)", 3, 1, {8, 8, 8}, 2, 2, 128, {8}, {1}, {1}, {0}, F16),
        mk("3d 9x11x10 k3 gqa4/1", 3, 1, {9, 11, 10}, 4, 1, 32, {3}, {1}, {1}, {0}, BF),
        mk("3d 10x12x14 k5,3,7 causal", 3, 1, {10, 12, 14}, 2, 2, 128, {5, 3, 7}, {2, 1, 3}, {1}, {1}, F16),
        mk("f32 1d L50 k5", 1, 2, {50}, 2, 2, 32, {5}, {1}, {1}, {0}, F32),
        mk("f32 2d 12x15 k3,5 d2,1 c gqa", 2, 1, {12, 15}, 4, 2, 64, {3, 5}, {1}, {2, 1}, {1}, F32),
        mk("f32 3d 5x6x7 k3", 3, 1, {5, 6, 7}, 2, 2, 128, {3}, {1}, {1}, {0}, F32),
        mk("f16 2d 17x19 k5 d3", 2, 1, {17, 19}, 2, 2, 128, {5}, {2}, {3}, {0}, F16),
        // No tile cut (fused::tiles_never_cut): the Hopper forward's kernel without masks.
        mk("1d B2 L4096 k512 s512 (blocked)", 1, 2, {4096}, 2, 2, 128, {512}, {512}, {1}, {0}, BF),
        mk("2d 64x96 k16,32 s16 (aligned strides)", 2, 1, {64, 96}, 2, 2, 64, {16, 32}, {16}, {1}, {0}, F16),
        // Hopper: more query tiles than SMs (persistent CTAs walk several, across heads, batch
        // and dilation groups of unequal extents).
        mk("2d 72x80 k9 d3 gqa8/4 (persistent)", 2, 1, {72, 80}, 8, 4, 64, {9}, {1}, {3}, {0}, BF),
        mk("1d B2 L4000 k33 s2 causal (persistent)", 1, 2, {4000}, 8, 8, 128, {33}, {2}, {1}, {1}, F16),
        mk("2d B8 40x48 k9 gqa4/2 D32 (many tiles)", 2, 8, {40, 48}, 4, 2, 32, {9}, {1}, {1}, {0}, BF),
        mk("1d B2 L6000 k257 D32 (many tiles)", 1, 2, {6000}, 4, 4, 32, {257}, {1}, {1}, {0}, F16),
        // Hopper: cp.async gather instead of TMA (3-D with batch > 1; dilation > 8).
        mk("3d B2 7x9x12 k3,5,5 s1,2,1", 3, 2, {7, 9, 12}, 2, 2, 64, {3, 5, 5}, {1, 2, 1}, {1}, {0}, BF),
        mk("1d B2 L230 k7 d20", 1, 2, {230}, 2, 1, 128, {7}, {1}, {20}, {0}, F16),
    };
    if (g_fwd == hopper_or_fused_fwd) {  // head_dim 256: Hopper kernels only (TMA; cp.async)
      cases.push_back(mk("2d 20x24 k5,7 s1,2 c D256", 2, 1, {20, 24}, 2, 2, 256, {5, 7}, {1, 2}, {1}, {1, 0}, BF));
      cases.push_back(mk("1d B2 L230 k7 d20 gqa4/2 D256", 1, 2, {230}, 4, 2, 256, {7}, {1}, {20}, {0}, F16));
    }
    for (auto& c : cases)
      if (only.empty() || c.name.find(only) != std::string::npos) run_case(c);
  }

  if (do_bench) {
    bench(mk("V1 56x56 k7 D32 B128 H2", 2, 128, {56, 56}, 2, 2, 32, {7}, {1}, {1}, {0}, BF), true, 20);
    bench(mk("V2 56x56 k7 d8 D32 B128 H2", 2, 128, {56, 56}, 2, 2, 32, {7}, {1}, {8}, {0}, BF), true, 20);
    bench(mk("2d 128x128 k31 D128 H16", 2, 1, {128, 128}, 16, 16, 128, {31}, {1}, {1}, {0}, BF), true, 10);
    bench(mk("2d 64x64 k13 D128 H16 B4", 2, 4, {64, 64}, 16, 16, 128, {13}, {1}, {1}, {0}, BF), false, 20);
    bench(mk("2d 56x56 k7 D64 H4 B32", 2, 32, {56, 56}, 4, 4, 64, {7}, {1}, {1}, {0}, BF), true, 20);
    bench(mk("1d L32768 k63 D64 H8 B2", 1, 2, {32768}, 8, 8, 64, {63}, {1}, {1}, {0}, BF), true, 20);
    bench(mk("3d 24x24x24 k3 D32 H4 B4", 3, 4, {24, 24, 24}, 4, 4, 32, {3}, {1}, {1}, {0}, BF), true, 20);
    bench(mk("A1 1d L32768 k2048 D128 H1", 1, 1, {32768}, 1, 1, 128, {2048}, {1}, {1}, {0}, BF), true, 10);
    bench(mk("A1c causal k2048 D128 H16", 1, 1, {32768}, 16, 16, 128, {2048}, {1}, {1}, {1}, BF), true, 5);
    bench(mk("A1b 1d L32768 k2048 s2048 D128", 1, 1, {32768}, 1, 1, 128, {2048}, {2048}, {1}, {0}, BF), false, 10);
    bench(mk("A2 256x256 k80 D128 H24", 2, 1, {256, 256}, 24, 24, 128, {80}, {1}, {1}, {0}, BF), true, 3);
    bench(mk("A2s 256x256 k80 s16 D128 H24", 2, 1, {256, 256}, 24, 24, 128, {80}, {16}, {1}, {0}, BF), false, 3);
    // A2s's query tiles with fewer and more key tiles each (18, 50, 98 on the Hopper forward, none
    // cut): their times against the count split a query tile's fixed cost from a key tile's.
    bench(mk("2d 256x256 k48 s16 D128 H24", 2, 1, {256, 256}, 24, 24, 128, {48}, {16}, {1}, {0}, BF), false, 3);
    bench(mk("2d 256x256 k112 s16 D128 H24", 2, 1, {256, 256}, 24, 24, 128, {112}, {16}, {1}, {0}, BF), false, 3);
    bench(mk("A3 30x48x80 k18,24,24 H24", 3, 1, {30, 48, 80}, 24, 24, 128, {18, 24, 24}, {1}, {1}, {0}, BF), false, 3);
    bench(mk("A3s 30x48x80 k18,24,24 s16,8,8", 3, 1, {30, 48, 80}, 24, 24, 128, {18, 24, 24}, {16, 8, 8}, {1}, {0}, BF), false, 3);
    bench(mk("A1s 1d L32768 k2048 s256 D128", 1, 1, {32768}, 1, 1, 128, {2048}, {256}, {1}, {0}, BF), false, 10);
    bench(mk("full causal 1d L16384 D128 H8", 1, 1, {16384}, 8, 8, 128, {16384}, {1}, {1}, {1}, BF), true, 10);
    bench(mk("d32 1d L16384 k1024 H8 B2", 1, 2, {16384}, 8, 8, 32, {1024}, {1}, {1}, {0}, BF), true, 10);
    bench(mk("d64 2d 96x96 k21 H8 B2", 2, 2, {96, 96}, 8, 8, 64, {21}, {1}, {1}, {0}, BF), true, 10);
    bench(mk("d32 2d 96x96 k21 H8 B2", 2, 2, {96, 96}, 8, 8, 32, {21}, {1}, {1}, {0}, BF), true, 10);
    if (g_fwd == hopper_or_fused_fwd)
      bench(mk("d256 2d 64x64 k13 H8 B4", 2, 4, {64, 64}, 8, 8, 256, {13}, {1}, {1}, {0}, BF), true, 20);
  }

  printf("\n%-30s %10s %8s %10s %10s %8s %8s\n", "problem (bf16)", "fwd ms", "fwd TF", "bwd ms", "f+b ms", "f+b TF", "check");
  for (auto& r : g_bench)
    printf("%-30s %10.3f %8.1f %10.3f %10.3f %8.1f %8.1e\n", r.name.c_str(), r.fwd_ms, r.fwd_tf,
           r.bwd_ms, r.fwd_ms + r.bwd_ms, r.fb_tf, r.chk);
  printf("peers (H100, benchmarks.md): V1 cuDNN fwd 1.77 ms (JAX) / f+b 5.56 ms; 2d k31: cuDNN 3.59 ms fwd;"
         " A2 cuDNN 82.0 ms fwd; A1 cuDNN 0.846 ms fwd; A3 cuDNN 255 ms\n");
  printf("RESULT: %s (%d failures)\n", g_failed ? "FAIL" : "PASS", g_failed);
  return g_failed ? 1 : 0;
}
