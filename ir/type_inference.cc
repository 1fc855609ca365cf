// Type inference for every op kind.
#include "ir/type_inference.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "ir/expr.h"
#include "ir/ops.h"

namespace kiln {
namespace {

absl::Status invalid(auto&&... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); }

std::string ordinal(size_t i) { return absl::StrCat("input ", i); }

absl::Status expect_rank(const Type& t, size_t i, int rank) {
  if (t.rank() != rank) {
    return invalid(ordinal(i), " must have rank ", rank, ", got ", t.to_string());
  }
  return absl::OkStatus();
}

absl::Status expect_index_vector(const Type& t, size_t i) {
  if (t.dtype != DType::kI32 && t.dtype != DType::kI64) {
    return invalid(ordinal(i), " must be an i32/i64 index vector, got ", t.to_string());
  }
  return expect_rank(t, i, 1);
}

absl::Status expect_float(const Type& t, size_t i) {
  if (!is_float(t.dtype))
    return invalid(ordinal(i), " must be a float tensor, got ", t.to_string());
  return absl::OkStatus();
}

absl::Status expect_same_dim(const Dim& a, const Dim& b, absl::string_view what) {
  if (!(a == b)) return invalid(what, " mismatch: ", a.to_string(), " vs ", b.to_string());
  return absl::OkStatus();
}

// Normalizes a possibly negative axis against `rank`.
absl::StatusOr<int> normalize_axis(int64_t axis, int rank) {
  int64_t a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) return invalid("axis ", axis, " is out of range for rank ", rank);
  return static_cast<int>(a);
}

absl::Status check_rope_attrs(const Attributes& attrs) {
  if (absl::StatusOr<double> theta = attrs.get_float("theta"); !theta.ok()) {
    return theta.status();
  } else if (*theta <= 0) {
    return invalid("attribute 'theta' must be positive");
  }
  absl::StatusOr<int64_t> dim = attrs.get_int("rotary_dim");
  if (!dim.ok()) return dim.status();
  if (*dim <= 0 || *dim % 2 != 0)
    return invalid("attribute 'rotary_dim' must be positive and even");
  absl::StatusOr<std::string> layout = attrs.get_string("layout");
  if (!layout.ok()) return layout.status();
  if (*layout != "half" && *layout != "interleaved") {
    return invalid("attribute 'layout' must be \"half\" or \"interleaved\", got \"", *layout, "\"");
  }
  if (attrs.has("scaling")) {
    absl::StatusOr<std::string> kind = attrs.get_string("scaling");
    if (!kind.ok()) return kind.status();
    if (*kind != "llama3")
      return invalid("unknown rope scaling \"", *kind, "\" (supported: llama3)");
    for (const char* key : {"scaling_factor", "scaling_low_freq_factor", "scaling_high_freq_factor",
                            "scaling_original_max_positions"}) {
      if (absl::StatusOr<double> v = attrs.get_float(key); !v.ok()) return v.status();
    }
  }
  return absl::OkStatus();
}

// Shared checks of the page table operands (PageTableOperands' order) starting at input `first`.
absl::Status check_page_metadata(absl::Span<const Type> in, size_t first) {
  for (size_t i = first; i < first + PageTableOperands::kCount; ++i) {
    if (absl::Status s = expect_index_vector(in[i], i); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status check_cache(const Type& cache, size_t i) {
  if (absl::Status s = expect_rank(cache, i, 4); !s.ok()) return s;
  return expect_float(cache, i);
}

int64_t static_or(const Dim& d, int64_t fallback) { return d.is_symbolic() ? fallback : d.value; }

// The scale array operand `i` of the KV cache `cache` (operand `cache_i`), which an fp8e4m3 cache
// needs (f32[NP, PS, Hkv]: one scale per slot and KV head) and any other cache must not have.
// `has_scales`: whether the node carries scale operands.
absl::Status check_cache_scales(absl::Span<const Type> in, size_t cache_i, bool has_scales,
                                size_t i) {
  const Type& cache = in[cache_i];
  const bool fp8 = cache.dtype == DType::kFP8E4M3;
  if (fp8 && !has_scales) {
    return invalid(ordinal(cache_i), " is an fp8e4m3 KV cache, which needs its scale array f32[",
                   cache.shape[0].to_string(), ",", cache.shape[1].to_string(), ",",
                   cache.shape[2].to_string(), "] as a trailing operand");
  }
  if (!fp8 && has_scales) {
    return invalid(ordinal(cache_i), " is a ", dtype_name(cache.dtype),
                   " KV cache: only fp8e4m3 caches take scale arrays");
  }
  if (!has_scales) return absl::OkStatus();
  const Type& scales = in[i];
  if (scales.dtype != DType::kF32 || scales.rank() != 3 || !(scales.shape[0] == cache.shape[0]) ||
      !(scales.shape[1] == cache.shape[1]) || !(scales.shape[2] == cache.shape[2])) {
    return invalid(ordinal(i), " must be the scale array f32[", cache.shape[0].to_string(), ",",
                   cache.shape[1].to_string(), ",", cache.shape[2].to_string(), "] of ",
                   ordinal(cache_i), ", got ", scales.to_string());
  }
  return absl::OkStatus();
}

// Operand count of an op whose caches may carry scale arrays: `base`, or `base + scales`.
absl::Status check_operand_count(OpKind op, size_t n, size_t base, size_t scales) {
  if (n != base && n != base + scales) {
    return invalid(op_name(op), " takes ", base, " inputs (", base + scales,
                   " with the scale arrays of fp8e4m3 caches), got ", n);
  }
  return absl::OkStatus();
}

absl::Status check_gqa(const Dim& hq, const Dim& hkv) {
  int64_t q = static_or(hq, 0), kv = static_or(hkv, 0);
  if (q <= 0 || kv <= 0 || q % kv != 0) {
    return invalid("query heads (", hq.to_string(), ") must be a positive multiple of KV heads (",
                   hkv.to_string(), ")");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Shape> broadcast_shapes(const Shape& a, const Shape& b) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const Dim* da = i < a.size() ? &a[a.size() - 1 - i] : nullptr;
    const Dim* db = i < b.size() ? &b[b.size() - 1 - i] : nullptr;
    Dim& o = out[rank - 1 - i];
    if (da == nullptr) {
      o = *db;
    } else if (db == nullptr || *da == *db) {
      o = *da;
    } else if (*da == Dim::constant(1)) {
      o = *db;
    } else if (*db == Dim::constant(1)) {
      o = *da;
    } else {
      return invalid("shapes ", shape_to_string(a), " and ", shape_to_string(b),
                     " do not broadcast");
    }
  }
  return out;
}

absl::StatusOr<std::vector<Type>> infer_types(OpKind op, absl::Span<const Type> in,
                                              const Attributes& attrs, const SymbolTable& symbols) {
  const OpTraits traits = op_traits(op);
  if (traits.num_inputs >= 0 && in.size() != static_cast<size_t>(traits.num_inputs)) {
    return invalid(op_name(op), " takes ", traits.num_inputs, " inputs, got ", in.size());
  }
  switch (op) {
    case OpKind::kConstant: {
      if (absl::StatusOr<double> v = attrs.get_float("value"); !v.ok()) return v.status();
      absl::StatusOr<DType> dtype = attrs.get_dtype("dtype");
      if (!dtype.ok()) return dtype.status();
      return std::vector<Type>{{*dtype, {}}};
    }
    case OpKind::kRopeTable: {
      absl::StatusOr<std::string> part = attrs.get_string("part");
      if (!part.ok()) return part.status();
      if (*part != "cos" && *part != "sin")
        return invalid("attribute 'part' must be \"cos\" or \"sin\"");
      if (absl::Status s = check_rope_attrs(attrs); !s.ok()) return s;
      absl::StatusOr<int64_t> max_pos = attrs.get_int("max_positions");
      if (!max_pos.ok()) return max_pos.status();
      if (*max_pos <= 0) return invalid("attribute 'max_positions' must be positive");
      return std::vector<Type>{
          {DType::kF32, {Dim::constant(*max_pos), Dim::constant(*attrs.get_int("rotary_dim"))}}};
    }
    case OpKind::kGather: {
      const Type& table = in[0];
      if (table.rank() < 1) return invalid("input 0 (table) must have rank >= 1");
      if (is_quantized(table.dtype))
        return invalid("gather from a quantized table is not supported");
      if (absl::Status s = expect_index_vector(in[1], 1); !s.ok()) return s;
      Shape shape = {in[1].shape[0]};
      shape.insert(shape.end(), table.shape.begin() + 1, table.shape.end());
      return std::vector<Type>{{table.dtype, shape}};
    }
    case OpKind::kReshape: {
      absl::StatusOr<IntList> target = attrs.get_int_list("shape");
      if (!target.ok()) return target.status();
      Shape out;
      for (size_t i = 0; i < target->size(); ++i) {
        int64_t t = (*target)[i];
        if (t == 0) {
          if (i >= in[0].shape.size())
            return invalid("reshape: shape[", i, "] = 0 copies a dim the input lacks");
          out.push_back(in[0].shape[i]);
        } else if (t > 0) {
          out.push_back(Dim::constant(t));
        } else {
          return invalid("reshape: shape[", i, "] = ", t, " (entries are 0 = copy, or positive)");
        }
      }
      // Same element count: equal product of constants and the same multiset of symbolic dims.
      auto split = [](const Shape& s, int64_t* product, std::vector<std::string>* syms) {
        for (const Dim& d : s) {
          if (d.is_symbolic()) {
            syms->push_back(d.to_string());
          } else {
            *product *= d.value;
          }
        }
        std::sort(syms->begin(), syms->end());
      };
      int64_t pa = 1, pb = 1;
      std::vector<std::string> sa, sb;
      split(in[0].shape, &pa, &sa);
      split(out, &pb, &sb);
      if (pa != pb || sa != sb) {
        return invalid("reshape from ", shape_to_string(in[0].shape), " to ", shape_to_string(out),
                       " changes the element count");
      }
      return std::vector<Type>{{in[0].dtype, out}};
    }
    case OpKind::kSlice: {
      absl::StatusOr<int64_t> axis = attrs.get_int("axis");
      absl::StatusOr<int64_t> start = attrs.get_int("start");
      absl::StatusOr<int64_t> end = attrs.get_int("end");
      for (const auto* s : {&axis, &start, &end}) {
        if (!s->ok()) return s->status();
      }
      absl::StatusOr<int> a = normalize_axis(*axis, in[0].rank());
      if (!a.ok()) return a.status();
      const Dim& d = in[0].shape[*a];
      if (d.is_symbolic()) return invalid("slice along symbolic dim ", d.to_string());
      if (*start < 0 || *start >= *end || *end > d.value) {
        return invalid("slice [", *start, ":", *end, ") is out of range for dim ", d.value);
      }
      Type out = in[0];
      out.shape[*a] = Dim::constant(*end - *start);
      return std::vector<Type>{out};
    }
    case OpKind::kConcat: {
      if (in.empty()) return invalid("concat needs at least one input");
      absl::StatusOr<int64_t> axis = attrs.get_int("axis");
      if (!axis.ok()) return axis.status();
      absl::StatusOr<int> a = normalize_axis(*axis, in[0].rank());
      if (!a.ok()) return a.status();
      Type out = in[0];
      int64_t total = 0;
      for (size_t i = 0; i < in.size(); ++i) {
        if (in[i].dtype != in[0].dtype || in[i].rank() != in[0].rank()) {
          return invalid(ordinal(i), " (", in[i].to_string(), ") does not match input 0 (",
                         in[0].to_string(), ")");
        }
        for (int k = 0; k < in[0].rank(); ++k) {
          if (k == *a) continue;
          if (absl::Status s = expect_same_dim(in[i].shape[k], in[0].shape[k], "concat dim");
              !s.ok())
            return s;
        }
        if (in[i].shape[*a].is_symbolic()) return invalid("concat along a symbolic dim");
        total += in[i].shape[*a].value;
      }
      out.shape[*a] = Dim::constant(total);
      return std::vector<Type>{out};
    }
    case OpKind::kLastTokenRows: {
      if (absl::Status s = expect_rank(in[0], 0, 2); !s.ok()) return s;
      if (absl::Status s = expect_index_vector(in[1], 1); !s.ok()) return s;
      Dim seqs = in[1].shape[0];
      seqs.value -= 1;  // qo_indptr has S+1 entries
      if (!seqs.is_symbolic() && seqs.value < 1)
        return invalid("qo_indptr needs at least 2 entries");
      return std::vector<Type>{{in[0].dtype, {seqs, in[0].shape[1]}}};
    }
    case OpKind::kMatmul: {
      const Type& x = in[0];
      const Type& w = in[1];
      if (x.rank() < 1) return invalid("input 0 must have rank >= 1");
      if (absl::Status s = expect_rank(w, 1, 2); !s.ok()) return s;
      if (x.dtype != w.dtype) {
        return invalid("matmul of ", x.to_string(), " by ", w.to_string(), ": dtypes differ");
      }
      if (absl::Status s = expect_same_dim(x.shape.back(), w.shape[1], "matmul contraction dim");
          !s.ok())
        return s;
      Type out = x;
      out.shape.back() = w.shape[0];
      return std::vector<Type>{out};
    }
    case OpKind::kAdd:
    case OpKind::kSub:
    case OpKind::kMul:
    case OpKind::kDiv: {
      if (in[0].dtype != in[1].dtype) {
        return invalid("operands have different dtypes: ", in[0].to_string(), " and ",
                       in[1].to_string());
      }
      if (absl::Status s = expect_float(in[0], 0); !s.ok()) return s;
      absl::StatusOr<Shape> shape = broadcast_shapes(in[0].shape, in[1].shape);
      if (!shape.ok()) return shape.status();
      return std::vector<Type>{{in[0].dtype, *shape}};
    }
    case OpKind::kNeg:
    case OpKind::kExp:
    case OpKind::kRsqrt:
    case OpKind::kSilu:
      if (absl::Status s = expect_float(in[0], 0); !s.ok()) return s;
      return std::vector<Type>{in[0]};
    case OpKind::kCast: {
      absl::StatusOr<DType> dtype = attrs.get_dtype("dtype");
      if (!dtype.ok()) return dtype.status();
      if (is_quantized(*dtype) || is_quantized(in[0].dtype))
        return invalid("cast to or from a quantized dtype");
      return std::vector<Type>{{*dtype, in[0].shape}};
    }
    case OpKind::kReduceSum:
    case OpKind::kReduceMean:
    case OpKind::kReduceMax: {
      if (in[0].rank() < 1) return invalid("reduction of a scalar");
      if (absl::Status s = expect_float(in[0], 0); !s.ok()) return s;
      Type out = in[0];
      out.shape.back() = Dim::constant(1);
      return std::vector<Type>{out};
    }
    case OpKind::kKvWrite: {
      using Op = KvWriteOp;
      if (absl::Status s = check_operand_count(op, in.size(), Op::kNumOperands, Op::kNumScales);
          !s.ok())
        return s;
      const bool scaled = in.size() > size_t{Op::kNumOperands};
      const Type& cache = in[Op::kCache];
      const Type& rows = in[Op::kRows];
      const Type& slots = in[Op::kSlotMapping];
      if (absl::Status s = check_cache(cache, Op::kCache); !s.ok()) return s;
      if (absl::Status s = expect_rank(rows, Op::kRows, 3); !s.ok()) return s;
      if (absl::Status s = expect_float(rows, Op::kRows); !s.ok()) return s;
      if (absl::Status s = expect_index_vector(slots, Op::kSlotMapping); !s.ok()) return s;
      if (absl::Status s = expect_same_dim(rows.shape[1], cache.shape[2], "KV heads"); !s.ok())
        return s;
      if (absl::Status s = expect_same_dim(rows.shape[2], cache.shape[3], "head_dim"); !s.ok())
        return s;
      if (absl::Status s = expect_same_dim(rows.shape[0], slots.shape[0], "rows vs slot_mapping");
          !s.ok())
        return s;
      if (absl::Status s = check_cache_scales(in, Op::kCache, scaled, Op::kScales); !s.ok())
        return s;
      if (scaled && rows.dtype == DType::kFP8E4M3) {
        return invalid(
            "the rows written to an fp8e4m3 cache are quantized by kv_write: pass them "
            "unquantized, not as ",
            rows.to_string());
      }
      if (scaled) return std::vector<Type>{cache, in[Op::kScales]};
      return std::vector<Type>{cache};
    }
    case OpKind::kPagedQk: {
      using Op = PagedQkOp;
      if (absl::Status s = check_operand_count(op, in.size(), Op::kNumOperands, Op::kNumScales);
          !s.ok())
        return s;
      const Type& q = in[Op::kQ];
      const Type& cache = in[Op::kKCache];
      if (absl::Status s = expect_rank(q, Op::kQ, 3); !s.ok()) return s;
      if (absl::Status s = check_cache(cache, Op::kKCache); !s.ok()) return s;
      if (absl::Status s = check_cache_scales(in, Op::kKCache, in.size() > size_t{Op::kNumOperands},
                                              Op::kKScales);
          !s.ok())
        return s;
      if (absl::Status s = check_page_metadata(in, Op::kPageTable); !s.ok()) return s;
      if (absl::Status s = expect_same_dim(q.shape[2], cache.shape[3], "head_dim"); !s.ok())
        return s;
      if (absl::Status s = check_gqa(q.shape[1], cache.shape[2]); !s.ok()) return s;
      absl::StatusOr<std::string> kv_dim = attrs.get_string("kv_dim");
      if (!kv_dim.ok()) return kv_dim.status();
      if (symbols.find(*kv_dim) == nullptr) return invalid("kv_dim names unknown symbol ", *kv_dim);
      return std::vector<Type>{{DType::kF32, {q.shape[0], q.shape[1], Dim::symbolic(*kv_dim)}}};
    }
    case OpKind::kCausalMask: {
      using Op = CausalMaskOp;
      const Type& scores = in[Op::kScores];
      const Type& positions = in[Op::kPositions];
      if (absl::Status s = expect_rank(scores, Op::kScores, 3); !s.ok()) return s;
      if (absl::Status s = expect_float(scores, Op::kScores); !s.ok()) return s;
      if (absl::Status s = expect_index_vector(positions, Op::kPositions); !s.ok()) return s;
      if (absl::Status s = expect_same_dim(scores.shape[0], positions.shape[0], "tokens"); !s.ok())
        return s;
      return std::vector<Type>{scores};
    }
    case OpKind::kPagedPv: {
      using Op = PagedPvOp;
      if (absl::Status s = check_operand_count(op, in.size(), Op::kNumOperands, Op::kNumScales);
          !s.ok())
        return s;
      const Type& p = in[Op::kProbs];
      const Type& cache = in[Op::kVCache];
      if (absl::Status s = expect_rank(p, Op::kProbs, 3); !s.ok()) return s;
      if (absl::Status s = check_cache(cache, Op::kVCache); !s.ok()) return s;
      if (absl::Status s = check_cache_scales(in, Op::kVCache, in.size() > size_t{Op::kNumOperands},
                                              Op::kVScales);
          !s.ok())
        return s;
      if (absl::Status s = check_page_metadata(in, Op::kPageTable); !s.ok()) return s;
      if (absl::Status s = check_gqa(p.shape[1], cache.shape[2]); !s.ok()) return s;
      // The result's dtype: the cache's, or `dtype` (an fp8e4m3 cache's values are code * scale,
      // no e4m3 numbers, so its readers say what they want).
      DType out = cache.dtype;
      if (attrs.has("dtype")) {
        absl::StatusOr<DType> d = attrs.get_dtype("dtype");
        if (!d.ok()) return d.status();
        if (*d != DType::kF32 && *d != DType::kBF16 && *d != DType::kF16) {
          return invalid("paged_pv dtype must be f32, bf16 or f16, got ", dtype_name(*d));
        }
        out = *d;
      } else if (cache.dtype == DType::kFP8E4M3) {
        return invalid("paged_pv over an fp8e4m3 V cache needs a `dtype` attribute (its result's)");
      }
      return std::vector<Type>{{out, {p.shape[0], p.shape[1], cache.shape[3]}}};
    }
    case OpKind::kRmsNorm:
    case OpKind::kRmsNormResidual: {
      static_assert(RmsNormOp::kX == 0 && RmsNormResidualOp::kX == 0);
      const bool residual = op == OpKind::kRmsNormResidual;
      const Type& x = in[RmsNormOp::kX];
      const Type& w = in[residual ? int{RmsNormResidualOp::kWeight} : int{RmsNormOp::kWeight}];
      if (absl::StatusOr<double> eps = attrs.get_float("eps"); !eps.ok()) return eps.status();
      if (x.rank() < 1) return invalid("input 0 must have rank >= 1");
      if (absl::Status s = expect_float(x, 0); !s.ok()) return s;
      if (residual && !(in[RmsNormResidualOp::kResidual] == x)) {
        return invalid("residual ", in[RmsNormResidualOp::kResidual].to_string(),
                       " does not match input ", x.to_string());
      }
      if (w.rank() != 1 || !(w.shape[0] == x.shape.back()) || w.dtype != x.dtype) {
        return invalid("weight ", w.to_string(), " must be ", dtype_name(x.dtype), "[",
                       x.shape.back().to_string(), "]");
      }
      if (residual) return std::vector<Type>{x, x};
      return std::vector<Type>{x};
    }
    case OpKind::kRope: {
      using Op = RopeOp;
      const Type& x = in[Op::kX];
      if (absl::Status s = expect_rank(x, Op::kX, 3); !s.ok()) return s;
      if (absl::Status s = expect_float(x, Op::kX); !s.ok()) return s;
      if (absl::Status s = expect_index_vector(in[Op::kPositions], Op::kPositions); !s.ok())
        return s;
      if (absl::Status s = check_rope_attrs(attrs); !s.ok()) return s;
      if (x.shape[2].is_symbolic() || *attrs.get_int("rotary_dim") > x.shape[2].value) {
        return invalid("rotary_dim exceeds head_dim ", x.shape[2].to_string());
      }
      return std::vector<Type>{x};
    }
    case OpKind::kFlashAttention: {
      using Op = FlashAttentionOp;
      if (absl::Status s = check_operand_count(op, in.size(), Op::kNumOperands, Op::kNumScales);
          !s.ok())
        return s;
      const bool scaled = in.size() > size_t{Op::kNumOperands};
      const Type& q = in[Op::kQ];
      const Type& k = in[Op::kK];
      const Type& v = in[Op::kV];
      const Type& k_cache = in[Op::kKCache];
      const Type& v_cache = in[Op::kVCache];
      if (absl::StatusOr<double> scale = attrs.get_float("scale"); !scale.ok())
        return scale.status();
      for (size_t i : {Op::kQ, Op::kK, Op::kV}) {
        if (absl::Status s = expect_rank(in[i], i, 3); !s.ok()) return s;
      }
      if (absl::Status s = check_cache(k_cache, Op::kKCache); !s.ok()) return s;
      if (absl::Status s = check_cache(v_cache, Op::kVCache); !s.ok()) return s;
      if (absl::Status s = check_cache_scales(in, Op::kKCache, scaled, Op::kKScales); !s.ok())
        return s;
      if (absl::Status s = check_cache_scales(in, Op::kVCache, scaled, Op::kVScales); !s.ok())
        return s;
      if (absl::Status s = expect_index_vector(in[Op::kPositions], Op::kPositions); !s.ok())
        return s;
      if (absl::Status s = expect_index_vector(in[Op::kSlotMapping], Op::kSlotMapping); !s.ok())
        return s;
      if (absl::Status s = check_page_metadata(in, Op::kPageTable); !s.ok()) return s;
      if (!(k == v)) return invalid("k ", k.to_string(), " and v ", v.to_string(), " differ");
      if (absl::Status s = expect_same_dim(q.shape[2], k.shape[2], "head_dim"); !s.ok()) return s;
      if (absl::Status s = expect_same_dim(k.shape[1], k_cache.shape[2], "KV heads"); !s.ok())
        return s;
      if (absl::Status s = check_gqa(q.shape[1], k.shape[1]); !s.ok()) return s;
      if (scaled && k.dtype == DType::kFP8E4M3) {
        return invalid("k and v are quantized by the cache write: pass them unquantized, not as ",
                       k.to_string());
      }
      std::vector<Type> out(scaled ? 5 : 3);
      out[Op::kOutput] = q;
      out[Op::kKCacheOut] = k_cache;
      out[Op::kVCacheOut] = v_cache;
      if (scaled) {
        out[Op::kKScalesOut] = in[Op::kKScales];
        out[Op::kVScalesOut] = in[Op::kVScales];
      }
      return out;
    }
    case OpKind::kFusedElementwise: {
      if (in.empty()) return invalid("fused_elementwise needs at least one input");
      absl::StatusOr<std::string> expr = attrs.get_string("expr");
      if (!expr.ok()) return expr.status();
      if (absl::Status s = validate_expr(*expr, static_cast<int>(in.size())); !s.ok()) return s;
      absl::StatusOr<DType> dtype = attrs.get_dtype("dtype");
      if (!dtype.ok()) return dtype.status();
      Shape shape = in[0].shape;
      for (size_t i = 1; i < in.size(); ++i) {
        absl::StatusOr<Shape> b = broadcast_shapes(shape, in[i].shape);
        if (!b.ok()) return b.status();
        shape = *b;
      }
      return std::vector<Type>{{*dtype, shape}};
    }
    case OpKind::kGemm: {
      absl::StatusOr<std::string> name = attrs.get_string("epilogue");
      if (!name.ok()) return name.status();
      absl::StatusOr<GemmOp::Epilogue> epilogue = GemmOp::parse_epilogue(*name);
      if (!epilogue.ok()) return epilogue.status();
      const size_t want = GemmOp::num_operands(*epilogue);
      if (in.size() != want)
        return invalid("gemm with epilogue ", *name, " takes ", want, " inputs");
      absl::StatusOr<std::vector<Type>> mm =
          infer_types(OpKind::kMatmul, in.subspan(GemmOp::kX, 2), {}, symbols);
      if (!mm.ok()) return mm.status();
      const Type& out = (*mm)[0];
      if (const int b = GemmOp::bias_index(*epilogue); b >= 0) {
        const Type& bias = in[b];
        if (bias.rank() != 1 || !(bias.shape[0] == out.shape.back()) || bias.dtype != out.dtype) {
          return invalid("bias ", bias.to_string(), " must be ", dtype_name(out.dtype), "[",
                         out.shape.back().to_string(), "]");
        }
      }
      if (const int r = GemmOp::residual_index(*epilogue); r >= 0) {
        if (!(in[r] == out)) {
          return invalid("residual ", in[r].to_string(), " must match the product ",
                         out.to_string());
        }
      }
      return mm;
    }
    case OpKind::kAllReduce:
    case OpKind::kAllGather: {
      absl::StatusOr<int64_t> ranks = attrs.get_int("ranks");
      if (!ranks.ok()) return ranks.status();
      if (*ranks < 1) return invalid("attribute 'ranks' must be positive, got ", *ranks);
      if (absl::Status s = expect_float(in[0], 0); !s.ok()) return s;
      if (op == OpKind::kAllReduce) return std::vector<Type>{in[0]};
      absl::StatusOr<int64_t> axis = attrs.get_int("axis");
      if (!axis.ok()) return axis.status();
      absl::StatusOr<int> a = normalize_axis(*axis, in[0].rank());
      if (!a.ok()) return a.status();
      Type out = in[0];
      Dim& d = out.shape[*a];
      if (d.is_symbolic()) return invalid("all_gather along symbolic dim ", d.to_string());
      if (d.value > std::numeric_limits<int64_t>::max() / *ranks) {
        return invalid("all_gather of ", *ranks, " x ", d.value, " overflows");
      }
      d.value *= *ranks;
      return std::vector<Type>{out};
    }
  }
  return invalid("unknown op kind");
}

}  // namespace kiln
