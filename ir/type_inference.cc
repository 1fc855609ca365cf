// Type inference for every op kind.
#include "ir/type_inference.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "ir/expr.h"

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

// Shared checks of the paged-attention metadata inputs (qo_indptr, kv_page_indptr,
// kv_page_indices, kv_last_page_len) starting at input `first`.
absl::Status check_page_metadata(absl::Span<const Type> in, size_t first) {
  for (size_t i = first; i < first + 4; ++i) {
    if (absl::Status s = expect_index_vector(in[i], i); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status check_cache(const Type& cache, size_t i) {
  if (absl::Status s = expect_rank(cache, i, 4); !s.ok()) return s;
  return expect_float(cache, i);
}

int64_t static_or(const Dim& d, int64_t fallback) { return d.is_symbolic() ? fallback : d.value; }

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
      const Type& cache = in[0];
      const Type& rows = in[1];
      if (absl::Status s = check_cache(cache, 0); !s.ok()) return s;
      if (absl::Status s = expect_rank(rows, 1, 3); !s.ok()) return s;
      if (absl::Status s = expect_float(rows, 1); !s.ok()) return s;
      if (absl::Status s = expect_index_vector(in[2], 2); !s.ok()) return s;
      if (absl::Status s = expect_same_dim(rows.shape[1], cache.shape[2], "KV heads"); !s.ok())
        return s;
      if (absl::Status s = expect_same_dim(rows.shape[2], cache.shape[3], "head_dim"); !s.ok())
        return s;
      if (absl::Status s = expect_same_dim(rows.shape[0], in[2].shape[0], "rows vs slot_mapping");
          !s.ok())
        return s;
      return std::vector<Type>{cache};
    }
    case OpKind::kPagedQk: {
      const Type& q = in[0];
      const Type& cache = in[1];
      if (absl::Status s = expect_rank(q, 0, 3); !s.ok()) return s;
      if (absl::Status s = check_cache(cache, 1); !s.ok()) return s;
      if (absl::Status s = check_page_metadata(in, 2); !s.ok()) return s;
      if (absl::Status s = expect_same_dim(q.shape[2], cache.shape[3], "head_dim"); !s.ok())
        return s;
      if (absl::Status s = check_gqa(q.shape[1], cache.shape[2]); !s.ok()) return s;
      absl::StatusOr<std::string> kv_dim = attrs.get_string("kv_dim");
      if (!kv_dim.ok()) return kv_dim.status();
      if (symbols.find(*kv_dim) == nullptr) return invalid("kv_dim names unknown symbol ", *kv_dim);
      return std::vector<Type>{{DType::kF32, {q.shape[0], q.shape[1], Dim::symbolic(*kv_dim)}}};
    }
    case OpKind::kCausalMask: {
      if (absl::Status s = expect_rank(in[0], 0, 3); !s.ok()) return s;
      if (absl::Status s = expect_float(in[0], 0); !s.ok()) return s;
      if (absl::Status s = expect_index_vector(in[1], 1); !s.ok()) return s;
      if (absl::Status s = expect_same_dim(in[0].shape[0], in[1].shape[0], "tokens"); !s.ok())
        return s;
      return std::vector<Type>{in[0]};
    }
    case OpKind::kPagedPv: {
      const Type& p = in[0];
      const Type& cache = in[1];
      if (absl::Status s = expect_rank(p, 0, 3); !s.ok()) return s;
      if (absl::Status s = check_cache(cache, 1); !s.ok()) return s;
      if (absl::Status s = check_page_metadata(in, 2); !s.ok()) return s;
      if (absl::Status s = check_gqa(p.shape[1], cache.shape[2]); !s.ok()) return s;
      return std::vector<Type>{{cache.dtype, {p.shape[0], p.shape[1], cache.shape[3]}}};
    }
    case OpKind::kRmsNorm:
    case OpKind::kRmsNormResidual: {
      const bool residual = op == OpKind::kRmsNormResidual;
      const Type& x = in[0];
      const Type& w = in[residual ? 2 : 1];
      if (absl::StatusOr<double> eps = attrs.get_float("eps"); !eps.ok()) return eps.status();
      if (x.rank() < 1) return invalid("input 0 must have rank >= 1");
      if (absl::Status s = expect_float(x, 0); !s.ok()) return s;
      if (residual && !(in[1] == x)) {
        return invalid("residual ", in[1].to_string(), " does not match input ", x.to_string());
      }
      if (w.rank() != 1 || !(w.shape[0] == x.shape.back()) || w.dtype != x.dtype) {
        return invalid("weight ", w.to_string(), " must be ", dtype_name(x.dtype), "[",
                       x.shape.back().to_string(), "]");
      }
      if (residual) return std::vector<Type>{x, x};
      return std::vector<Type>{x};
    }
    case OpKind::kRope: {
      if (absl::Status s = expect_rank(in[0], 0, 3); !s.ok()) return s;
      if (absl::Status s = expect_float(in[0], 0); !s.ok()) return s;
      if (absl::Status s = expect_index_vector(in[1], 1); !s.ok()) return s;
      if (absl::Status s = check_rope_attrs(attrs); !s.ok()) return s;
      if (in[0].shape[2].is_symbolic() || *attrs.get_int("rotary_dim") > in[0].shape[2].value) {
        return invalid("rotary_dim exceeds head_dim ", in[0].shape[2].to_string());
      }
      return std::vector<Type>{in[0]};
    }
    case OpKind::kFlashAttention: {
      const Type& q = in[0];
      const Type& k = in[1];
      const Type& v = in[2];
      if (absl::StatusOr<double> scale = attrs.get_float("scale"); !scale.ok())
        return scale.status();
      for (size_t i = 0; i < 3; ++i) {
        if (absl::Status s = expect_rank(in[i], i, 3); !s.ok()) return s;
      }
      if (absl::Status s = check_cache(in[3], 3); !s.ok()) return s;
      if (absl::Status s = check_cache(in[4], 4); !s.ok()) return s;
      if (absl::Status s = expect_index_vector(in[5], 5); !s.ok()) return s;
      if (absl::Status s = expect_index_vector(in[6], 6); !s.ok()) return s;
      if (absl::Status s = check_page_metadata(in, 7); !s.ok()) return s;
      if (!(k == v)) return invalid("k ", k.to_string(), " and v ", v.to_string(), " differ");
      if (absl::Status s = expect_same_dim(q.shape[2], k.shape[2], "head_dim"); !s.ok()) return s;
      if (absl::Status s = expect_same_dim(k.shape[1], in[3].shape[2], "KV heads"); !s.ok())
        return s;
      if (absl::Status s = check_gqa(q.shape[1], k.shape[1]); !s.ok()) return s;
      return std::vector<Type>{q, in[3], in[4]};
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
      absl::StatusOr<std::string> epilogue = attrs.get_string("epilogue");
      if (!epilogue.ok()) return epilogue.status();
      size_t want = *epilogue == "none"                              ? 2
                    : *epilogue == "bias" || *epilogue == "residual" ? 3
                    : *epilogue == "bias_residual"                   ? 4
                                                                     : 0;
      if (want == 0) {
        return invalid("unknown gemm epilogue \"", *epilogue,
                       "\" (none, bias, residual, bias_residual)");
      }
      if (in.size() != want)
        return invalid("gemm with epilogue ", *epilogue, " takes ", want, " inputs");
      absl::StatusOr<std::vector<Type>> mm =
          infer_types(OpKind::kMatmul, in.subspan(0, 2), {}, symbols);
      if (!mm.ok()) return mm.status();
      const Type& out = (*mm)[0];
      size_t next = 2;
      if (*epilogue == "bias" || *epilogue == "bias_residual") {
        const Type& bias = in[next++];
        if (bias.rank() != 1 || !(bias.shape[0] == out.shape.back()) || bias.dtype != out.dtype) {
          return invalid("bias ", bias.to_string(), " must be ", dtype_name(out.dtype), "[",
                         out.shape.back().to_string(), "]");
        }
      }
      if (*epilogue == "residual" || *epilogue == "bias_residual") {
        if (!(in[next] == out)) {
          return invalid("residual ", in[next].to_string(), " must match the product ",
                         out.to_string());
        }
      }
      return mm;
    }
  }
  return invalid("unknown op kind");
}

}  // namespace kiln
