// The pybind11 module jax_na._jax_na_native: hands out the XLA FFI handlers as capsules, by
// target name (and, for tests, the CUDA handlers' call counts), and the rule that picks the
// Hopper backward's RD handler. Registration with XLA happens in jax_na/_native.py.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "common/problem.h"
#include "ffi/handlers.h"
#include "hopper/rd_rule.h"

namespace py = pybind11;

namespace {

py::dict to_dict(const jax_na::HandlerTable& table) {
  py::dict d;
  for (const auto& [name, fn] : table) d[name] = py::capsule(reinterpret_cast<void*>(fn));
  return d;
}

// The Problem of a query of shape [batch, *spatial, heads, head_dim] and the window parameters,
// one entry per spatial dim (padded at the front as the FFI decoder does; dtype not set).
jax_na::Problem problem_of(const std::vector<int64_t>& q_shape, int64_t heads_kv,
                           const std::vector<int64_t>& kernel, const std::vector<int64_t>& stride,
                           const std::vector<int64_t>& dilation,
                           const std::vector<int64_t>& causal) {
  const size_t rank = q_shape.size() < 4 ? 0 : q_shape.size() - 3;
  if (rank < 1 || rank > 3 || kernel.size() != rank || stride.size() != rank ||
      dilation.size() != rank || causal.size() != rank)
    throw std::invalid_argument("a query shape [batch, *spatial, heads, head_dim] of spatial rank "
                                "1 to 3, and one kernel size, stride, dilation, causal flag per "
                                "spatial dim");
  jax_na::Problem p;
  p.rank = int(rank);
  p.batch = q_shape[0];
  p.heads = q_shape[rank + 1];
  p.heads_kv = heads_kv;
  p.head_dim = q_shape[rank + 2];
  const size_t pad = 3 - rank;
  for (size_t i = 0; i < pad; ++i) p.dim[i] = jax_na::DimParams{1, 1, 1, 1, false};
  for (size_t i = 0; i < rank; ++i)
    p.dim[pad + i] = jax_na::DimParams{int(q_shape[1 + i]), int(kernel[i]), int(stride[i]),
                                       int(dilation[i]), causal[i] != 0};
  return p;
}

}  // namespace

PYBIND11_MODULE(_jax_na_native, m) {
  m.doc() = "jax_na native kernels: XLA FFI handler capsules by target name.";
  m.def("cpu_registrations", [] { return to_dict(jax_na::cpu_handlers()); },
        "{target name: capsule} of the CPU handlers.");
  m.def("cuda_registrations",
        [] {
#if defined(JAX_NA_WITH_CUDA) && JAX_NA_WITH_CUDA
          return to_dict(jax_na::cuda_handlers());
#else
          return py::dict();
#endif
        },
        "{target name: capsule} of the CUDA handlers; empty when built without CUDA.");
  m.def("cuda_call_counts",
        [] {
#if defined(JAX_NA_WITH_CUDA) && JAX_NA_WITH_CUDA
          const auto c = jax_na::cuda_call_counts();
          return py::make_tuple(c.first, c.second);
#else
          return py::make_tuple(0, 0);
#endif
        },
        "(calls, captured): CUDA handler calls so far, and those recorded into a command buffer "
        "(CUDA graph) by stream capture. For tests.");
  m.def("hopper_rd_pays",
        [](const std::vector<int64_t>& q_shape, int64_t heads_kv, const std::vector<int64_t>& kernel,
           const std::vector<int64_t>& stride, const std::vector<int64_t>& dilation,
           const std::vector<int64_t>& causal) {
          return jax_na::hopper::rd_pays(
              problem_of(q_shape, heads_kv, kernel, stride, dilation, causal));
        },
        py::arg("q_shape"), py::arg("heads_kv"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("dilation"), py::arg("is_causal"),
        "Whether cuda-hopper's backward forms delta in its dQ kernel (RD) for this problem: the "
        "rule of cuda/hopper/rd_rule.h.");
}
