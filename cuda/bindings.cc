// The pybind11 module jax_na._jax_na_native: hands out the XLA FFI handlers as capsules, by
// target name (and, for tests, the CUDA handlers' call counts). Registration with XLA happens
// in jax_na/_native.py.
#include <pybind11/pybind11.h>

#include "ffi/handlers.h"

namespace py = pybind11;

namespace {

py::dict to_dict(const jax_na::HandlerTable& table) {
  py::dict d;
  for (const auto& [name, fn] : table) d[name] = py::capsule(reinterpret_cast<void*>(fn));
  return d;
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
}
