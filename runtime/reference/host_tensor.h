// Host-side tensors and views of the CPU reference backend: fp32 storage for every float dtype,
// int32 for index dtypes; non-owning views for weights (kept in their file dtype) and KV caches.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ir/dtype.h"
#include "ir/shape.h"
#include "runtime/kv/cascade_layout.h"

namespace kiln {

/// Element count of a resolved shape (1 for a scalar).
inline int64_t num_elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

/// An owning host tensor. `dtype` is the logical IR dtype; float dtypes (f32/f16/bf16/fp8) are
/// stored in `f` as fp32, index dtypes (i32/i64/u8) in `i` as int32.
struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::vector<float> f;
  std::vector<int32_t> i;

  static HostTensor floats(std::vector<int64_t> shape, std::vector<float> data,
                           DType dtype = DType::kF32) {
    HostTensor t;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.f = std::move(data);
    return t;
  }
  static HostTensor ints(std::vector<int64_t> shape, std::vector<int32_t> data,
                         DType dtype = DType::kI32) {
    HostTensor t;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.i = std::move(data);
    return t;
  }

  bool is_index() const { return !is_float(dtype); }
  int64_t numel() const { return num_elements(shape); }
};

/// A weight as the loader maps it: dtype f32, bf16 or f16, row-major, not owned. bf16/f16
/// weights are widened on the fly by matmul/gather (and once, at executor creation, for ops
/// such as rmsnorm that read small weights elementwise).
struct ParamView {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
};
using ParamViews = std::map<std::string, ParamView, std::less<>>;

/// A KV cache [NP, PS, Hkv, D] in fp32, owned by the caller. It persists across steps and
/// kv_write / flash_attention write into it in place. An fp8e4m3 cache holds the e4m3 codes'
/// values (exact in fp32) in `data` and its scale array f32[NP, PS, Hkv] in `scales`: element
/// (slot, h, i) is data[slot, h, i] * scales[slot, h]. Other caches have no scales.
struct KvCacheView {
  float* data = nullptr;
  std::vector<int64_t> shape;
  float* scales = nullptr;
};

/// Everything one step binds: ordinary inputs, KV caches (inputs consumed as the cache operand of
/// kv_write / paged_qk / paged_pv / flash_attention), and symbol sizes the executor cannot derive
/// from input lengths. Tensors are read in place (not copied) during run().
struct InputBindings {
  std::map<std::string, HostTensor, std::less<>> tensors;
  std::map<std::string, KvCacheView, std::less<>> caches;
  SymbolBindings symbols;
  /// A decode step's shared-prefix layout (StepInputs::cascade), or null: with one, every
  /// flash_attention node of a decode step computes cascade attention (prefix and suffix
  /// softmaxes merged, runtime/reference/cascade_attention.h), the GPU's cascade data path.
  const CascadeLayout* cascade = nullptr;
};

}  // namespace kiln
