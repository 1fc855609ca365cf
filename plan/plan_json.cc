// Plan <-> manifest JSON (see plan_json.h). Writing builds the JSON field by field; reading goes
// through ObjectReader, which checks each field's presence and type before touching it and keeps
// the first error with the field's path.
#include "plan/plan_json.h"

#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kiln {
namespace {

using nlohmann::json;

// ---- enum names -------------------------------------------------------------------------------

template <class E>
struct EnumName {
  E value;
  const char* name;
};

constexpr EnumName<ParamType> kParamTypes[] = {{ParamType::kPointer, "ptr"},
                                               {ParamType::kI32, "i32"},
                                               {ParamType::kI64, "i64"},
                                               {ParamType::kF32, "f32"}};
constexpr EnumName<LaunchArg::Kind> kArgKinds[] = {{LaunchArg::Kind::kTensor, "tensor"},
                                                   {LaunchArg::Kind::kInt, "int"},
                                                   {LaunchArg::Kind::kFloat, "float"},
                                                   {LaunchArg::Kind::kWorkspace, "workspace"},
                                                   {LaunchArg::Kind::kRuntime, "runtime"}};
constexpr EnumName<RuntimeInput> kRuntimeInputs[] = {
    {RuntimeInput::kSampledIds, "sampled_ids"},
    {RuntimeInput::kTemperature, "temperature"},
    {RuntimeInput::kTopK, "top_k"},
    {RuntimeInput::kTopP, "top_p"},
    {RuntimeInput::kUniform, "uniform"},
    {RuntimeInput::kCascadePrefixSeqs, "cascade_prefix_seqs"},
    {RuntimeInput::kCascadePrefixPages, "cascade_prefix_pages"},
    {RuntimeInput::kCascadeKvStart, "cascade_kv_start"}};
constexpr EnumName<StepKind> kStepKinds[] = {{StepKind::kAlways, "always"},
                                             {StepKind::kPrefill, "prefill"},
                                             {StepKind::kDecode, "decode"},
                                             {StepKind::kCascade, "cascade"}};
constexpr EnumName<GemmEpilogue> kEpilogues[] = {{GemmEpilogue::kNone, "none"},
                                                 {GemmEpilogue::kBias, "bias"},
                                                 {GemmEpilogue::kResidual, "residual"},
                                                 {GemmEpilogue::kBiasResidual, "bias_residual"}};
constexpr EnumName<KvPageLayout> kPageLayouts[] = {{KvPageLayout::kNHD, "NHD"}};
constexpr EnumName<CollectiveKind> kCollectiveKinds[] = {
    {CollectiveKind::kAllReduce, "all_reduce"}, {CollectiveKind::kAllGather, "all_gather"}};

template <class E, size_t N>
const char* name_in(const EnumName<E> (&table)[N], E value) {
  for (const EnumName<E>& e : table) {
    if (e.value == value) return e.name;
  }
  return "unknown";
}

template <class E, size_t N>
std::optional<E> parse_in(const EnumName<E> (&table)[N], std::string_view name) {
  for (const EnumName<E>& e : table) {
    if (name == e.name) return e.value;
  }
  return std::nullopt;
}

template <class E, size_t N>
std::string names_of(const EnumName<E> (&table)[N]) {
  std::vector<std::string> names;
  for (const EnumName<E>& e : table) names.push_back(e.name);
  return absl::StrJoin(names, ", ");
}

// ---- reading ----------------------------------------------------------------------------------

std::string got(const json& j) {
  if (j.is_string()) return absl::StrCat("\"", j.get_ref<const std::string&>(), "\"");
  return j.type_name();
}

// Each read_value overload converts one JSON value or says why it cannot ("expected ...").
std::optional<std::string> read_value(const json& j, std::string& out) {
  if (!j.is_string()) return absl::StrCat("expected a string, got ", got(j));
  out = j.get<std::string>();
  return std::nullopt;
}

std::optional<std::string> read_value(const json& j, bool& out) {
  if (!j.is_boolean()) return absl::StrCat("expected true or false, got ", got(j));
  out = j.get<bool>();
  return std::nullopt;
}

template <class Int>
requires(std::is_integral_v<Int> &&
         !std::is_same_v<Int, bool>) std::optional<std::string> read_value(const json& j,
                                                                           Int& out) {
  if (!j.is_number_integer()) return absl::StrCat("expected an integer, got ", got(j));
  const bool fits =
      j.is_number_unsigned()
          ? j.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<Int>::max())
          : j.get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<Int>::min()) &&
                (std::is_unsigned_v<Int> ||
                 j.get<int64_t>() <= static_cast<int64_t>(std::numeric_limits<Int>::max()));
  if (!fits) return absl::StrCat("integer ", j.dump(), " is out of range");
  out = j.is_number_unsigned() ? static_cast<Int>(j.get<uint64_t>())
                               : static_cast<Int>(j.get<int64_t>());
  return std::nullopt;
}

// JSON has no infinities or NaN; the writer spells them as strings (a graph constant may be -inf).
std::optional<std::string> read_value(const json& j, double& out) {
  if (j.is_number()) {
    out = j.get<double>();
    return std::nullopt;
  }
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    if (s == "inf") return out = std::numeric_limits<double>::infinity(), std::nullopt;
    if (s == "-inf") return out = -std::numeric_limits<double>::infinity(), std::nullopt;
    if (s == "nan") return out = std::numeric_limits<double>::quiet_NaN(), std::nullopt;
  }
  return absl::StrCat("expected a number, got ", got(j));
}

std::optional<std::string> read_value(const json& j, DType& out) {
  if (!j.is_string()) return absl::StrCat("expected a dtype name, got ", got(j));
  std::optional<DType> d = parse_dtype(j.get_ref<const std::string&>());
  if (!d) return absl::StrCat("unknown dtype ", got(j));
  out = *d;
  return std::nullopt;
}

std::optional<std::string> read_value(const json& j, KernelFamily& out) {
  std::optional<KernelFamily> f =
      j.is_string() ? family_from_name(j.get_ref<const std::string&>()) : std::nullopt;
  if (!f) return absl::StrCat("expected a kernel family name, got ", got(j));
  out = *f;
  return std::nullopt;
}

template <class E, size_t N>
std::optional<std::string> read_enum(const json& j, const EnumName<E> (&table)[N], E& out) {
  std::optional<E> e =
      j.is_string() ? parse_in(table, j.get_ref<const std::string&>()) : std::nullopt;
  if (!e) return absl::StrCat("expected one of ", names_of(table), ", got ", got(j));
  out = *e;
  return std::nullopt;
}

std::optional<std::string> read_value(const json& j, ParamType& out) {
  return read_enum(j, kParamTypes, out);
}
std::optional<std::string> read_value(const json& j, StepKind& out) {
  return read_enum(j, kStepKinds, out);
}
std::optional<std::string> read_value(const json& j, GemmEpilogue& out) {
  return read_enum(j, kEpilogues, out);
}
std::optional<std::string> read_value(const json& j, KvPageLayout& out) {
  return read_enum(j, kPageLayouts, out);
}
std::optional<std::string> read_value(const json& j, CollectiveKind& out) {
  return read_enum(j, kCollectiveKinds, out);
}

template <class T>
std::optional<std::string> read_value(const json& j, std::vector<T>& out) {
  if (!j.is_array()) return absl::StrCat("expected an array, got ", got(j));
  out.assign(j.size(), T{});
  for (size_t i = 0; i < j.size(); ++i) {
    if (std::optional<std::string> why = read_value(j[i], out[i])) {
      return absl::StrCat("[", i, "]: ", *why);
    }
  }
  return std::nullopt;
}

std::optional<std::string> read_value(const json& j, std::array<std::string, 3>& out) {
  if (!j.is_array() || j.size() != 3) {
    return absl::StrCat("expected an array of 3 expressions, got ", got(j));
  }
  for (size_t i = 0; i < 3; ++i) {
    if (std::optional<std::string> why = read_value(j[i], out[i])) {
      return absl::StrCat("[", i, "]: ", *why);
    }
  }
  return std::nullopt;
}

/// Reads fields of one JSON object. The first error sticks (later reads do nothing) and is shared
/// with the readers of nested objects, so a reading function can read everything and check once.
class ObjectReader {
 public:
  ObjectReader(const json& j, std::string path, absl::Status* error)
      : j_(j), path_(std::move(path)), error_(error) {
    if (!j_.is_object()) fail(path_, absl::StrCat("expected an object, got ", got(j_)));
  }

  bool ok() const { return error_->ok(); }
  bool has(const char* key) const { return ok() && j_.is_object() && j_.contains(key); }

  /// A required field.
  template <class T>
  void req(const char* key, T& out) {
    const json* v = find(key);
    if (v == nullptr) {
      if (ok()) fail(field(key), "missing");
      return;
    }
    convert(*v, key, out);
  }
  /// An optional field: `out` keeps its value when the field is absent or null.
  template <class T>
  void opt(const char* key, T& out) {
    const json* v = find(key);
    if (v != nullptr && !v->is_null()) convert(*v, key, out);
  }
  /// The nested object `key` (required).
  ObjectReader object(const char* key) {
    const json* v = find(key);
    if (v == nullptr && ok()) fail(field(key), "missing");
    return ObjectReader(v != nullptr ? *v : empty_object(), field(key), error_);
  }
  /// Calls `each(ObjectReader&)` for every element of the required array of objects `key`.
  template <class F>
  void objects(const char* key, F&& each) {
    const json* v = find(key);
    if (v == nullptr) {
      if (ok()) fail(field(key), "missing");
      return;
    }
    if (!v->is_array()) return fail(field(key), absl::StrCat("expected an array, got ", got(*v)));
    for (size_t i = 0; i < v->size() && ok(); ++i) {
      ObjectReader element((*v)[i], absl::StrCat(field(key), "[", i, "]"), error_);
      if (element.ok()) each(element);
    }
  }
  const json* raw(const char* key) const { return find(key); }
  void fail(const std::string& where, const std::string& why) {
    if (ok()) *error_ = absl::InvalidArgumentError(absl::StrCat(where, ": ", why));
  }
  std::string field(const char* key) const { return absl::StrCat(path_, ".", key); }

 private:
  static const json& empty_object() {
    static const json e = json::object();
    return e;
  }
  const json* find(const char* key) const {
    if (!ok() || !j_.is_object()) return nullptr;
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }
  template <class T>
  void convert(const json& v, const char* key, T& out) {
    if (std::optional<std::string> why = read_value(v, out)) fail(field(key), *why);
  }

  const json& j_;
  std::string path_;
  absl::Status* error_;
};

// ---- writing ----------------------------------------------------------------------------------

json number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

json model_json(const ModelConfig& c) {
  json j = {{"architecture", c.architecture},
            {"source_architecture", c.source_architecture},
            {"hidden_size", c.hidden_size},
            {"num_layers", c.num_layers},
            {"num_heads", c.num_heads},
            {"num_kv_heads", c.num_kv_heads},
            {"head_dim", c.head_dim},
            {"intermediate_size", c.intermediate_size},
            {"vocab_size", c.vocab_size},
            {"max_context", c.max_context},
            {"rms_eps", number(c.rms_eps)},
            {"rope_theta", number(c.rope_theta)},
            {"rope_interleaved", c.rope_interleaved},
            {"tie_embeddings", c.tie_embeddings},
            {"attention_bias", c.attention_bias},
            {"bos_id", c.bos_id},
            {"eos_ids", c.eos_ids},
            {"weights_dtype", dtype_name(c.weights_dtype)},
            {"summary", c.summary()},  // for readers of the JSON; not read back
            {"rope_scaling", nullptr}};
  if (c.rope_scaling) {
    j["rope_scaling"] = {{"type", "llama3"},
                         {"factor", number(c.rope_scaling->factor)},
                         {"low_freq_factor", number(c.rope_scaling->low_freq_factor)},
                         {"high_freq_factor", number(c.rope_scaling->high_freq_factor)},
                         {"original_max_positions", c.rope_scaling->original_max_positions}};
  }
  return j;
}

json launch_arg_json(const LaunchArg& a) {
  json j = {{"kind", launch_arg_kind_name(a.kind)}};
  switch (a.kind) {
    case LaunchArg::Kind::kTensor:
    case LaunchArg::Kind::kWorkspace: j["value"] = a.value; break;
    case LaunchArg::Kind::kInt: j["value"] = a.expr; break;
    case LaunchArg::Kind::kFloat: j["value"] = number(a.real); break;
    case LaunchArg::Kind::kRuntime: j["value"] = runtime_input_name(a.runtime); break;
  }
  return j;
}

json kernel_json(const PlanKernel& k) {
  json params = json::array();
  for (const EntryParam& p : k.params) {
    params.push_back({{"name", p.name}, {"type", param_type_name(p.type)}});
  }
  return {{"key", k.key},
          {"family", family_name(k.family)},
          {"params", params},
          {"registers", k.registers},
          {"shared_bytes", k.shared_bytes},
          {"stack_bytes", k.stack_bytes},
          {"spill_bytes", k.spill_bytes},
          {"cubin_blob", k.cubin_blob},
          {"ptx_blob", k.ptx_blob},
          {"source_blob", k.source_blob}};
}

// Written only when set, so plans without bounds keep their exact text.
void put_bound(json& j, const StepBound& b) {
  if (!b.empty()) j["bound"] = {{"expr", b.expr}, {"min", b.min}, {"max", b.max}};
}

json launch_json(const PlanLaunch& l) {
  json args = json::array();
  for (const LaunchArg& a : l.args) args.push_back(launch_arg_json(a));
  json j = {{"node", l.node},
            {"kernel", l.kernel},
            {"grid", l.rule.grid},
            {"block", l.rule.block},
            {"dynamic_shared_bytes", l.rule.dynamic_shared_bytes},
            {"when", step_kind_name(l.rule.when)},
            {"args", args}};
  put_bound(j, l.rule.bound);
  return j;
}

json gemm_json(const PlanGemm& g) {
  json j = {{"node", g.node},
          {"m", g.m},
          {"n", g.n},
          {"k", g.k},
          {"a_dtype", dtype_name(g.a_dtype)},
          {"b_dtype", dtype_name(g.b_dtype)},
          {"out_dtype", dtype_name(g.out_dtype)},
          {"epilogue", gemm_epilogue_name(g.epilogue)},
          {"a", g.a},
          {"b", g.b},
          {"bias", g.bias},
          {"residual", g.residual},
          {"out", g.out}};
  put_bound(j, g.bound);
  return j;
}

json memory_json(const std::optional<MemoryPlan>& m) {
  if (!m) return nullptr;
  json buffers = json::array();
  for (const MemoryPlan::Buffer& b : m->buffers) {
    buffers.push_back({{"value", b.value},
                       {"offset", b.offset},
                       {"size", b.size},
                       {"first_use", b.first_use},
                       {"last_use", b.last_use},
                       {"alias_of", b.alias_of}});
  }
  return {{"arena_bytes", m->arena_bytes},
          {"lower_bound_bytes", m->lower_bound_bytes},
          {"alignment", m->alignment},
          {"buffers", buffers}};
}

// Only the layout's defining facts: its byte counts are computed (kv_layout.cc), never stored.
json kv_json(const KvLayout& kv) {
  return {{"page_size", kv.page_size},       {"layout", kv_page_layout_name(kv.layout)},
          {"dtype", dtype_name(kv.dtype)},   {"num_layers", kv.num_layers},
          {"num_kv_heads", kv.num_kv_heads}, {"head_dim", kv.head_dim}};
}

json weight_json(const PlanWeight& w) {
  json j = {{"name", w.name}, {"dtype", dtype_name(w.dtype)}, {"shape", w.shape}};
  if (w.rank >= 0) j["rank"] = w.rank;  // absent: every rank holds it
  if (w.derived()) {
    json parts = json::array();
    for (const PlanWeightPart& part : w.parts) {
      parts.push_back(
          {{"source", part.source}, {slice_axis_name(part.axis), {part.begin, part.end}}});
    }
    j["parts"] = std::move(parts);
  } else if (w.packed()) {
    j["blob"] = w.blob;
  } else {
    j["file"] = w.file;
    j["source_name"] = w.source_name;
    j["offset"] = w.offset;
    j["size"] = w.size;
    j["xxh3"] = w.xxh3;
  }
  return j;
}

// ---- reading the parts ------------------------------------------------------------------------

void read_model(ObjectReader r, ModelConfig& c) {
  r.req("architecture", c.architecture);
  r.req("source_architecture", c.source_architecture);
  r.req("hidden_size", c.hidden_size);
  r.req("num_layers", c.num_layers);
  r.req("num_heads", c.num_heads);
  r.req("num_kv_heads", c.num_kv_heads);
  r.req("head_dim", c.head_dim);
  r.req("intermediate_size", c.intermediate_size);
  r.req("vocab_size", c.vocab_size);
  r.req("max_context", c.max_context);
  r.req("rms_eps", c.rms_eps);
  r.req("rope_theta", c.rope_theta);
  r.req("rope_interleaved", c.rope_interleaved);
  r.req("tie_embeddings", c.tie_embeddings);
  r.req("attention_bias", c.attention_bias);
  r.req("bos_id", c.bos_id);
  r.req("eos_ids", c.eos_ids);
  r.req("weights_dtype", c.weights_dtype);
  const json* scaling = r.raw("rope_scaling");
  if (scaling != nullptr && !scaling->is_null()) {
    ObjectReader s = r.object("rope_scaling");
    RopeScaling rs;
    s.req("factor", rs.factor);
    s.req("low_freq_factor", rs.low_freq_factor);
    s.req("high_freq_factor", rs.high_freq_factor);
    s.req("original_max_positions", rs.original_max_positions);
    c.rope_scaling = rs;
  }
}

void read_launch_arg(ObjectReader& r, LaunchArg& a) {
  const json* kind = r.raw("kind");
  if (kind == nullptr) return r.fail(r.field("kind"), "missing");
  if (std::optional<std::string> why = read_enum(*kind, kArgKinds, a.kind)) {
    return r.fail(r.field("kind"), *why);
  }
  switch (a.kind) {
    case LaunchArg::Kind::kTensor:
    case LaunchArg::Kind::kWorkspace: r.req("value", a.value); break;
    case LaunchArg::Kind::kInt: r.req("value", a.expr); break;
    case LaunchArg::Kind::kFloat: r.req("value", a.real); break;
    case LaunchArg::Kind::kRuntime: {
      const json* v = r.raw("value");
      if (v == nullptr) return r.fail(r.field("value"), "missing");
      if (std::optional<std::string> why = read_enum(*v, kRuntimeInputs, a.runtime)) {
        r.fail(r.field("value"), *why);
      }
      break;
    }
  }
}

// The optional "bound" object of a launch or GEMM: a non-empty expression and non-negative
// limits, min <= max when both are set, at least one set (a bound that admits every step is a
// plan-writing mistake, not a no-op to accept).
void read_bound(ObjectReader& r, StepBound& b) {
  const json* v = r.raw("bound");
  if (v == nullptr || v->is_null()) return;
  ObjectReader o = r.object("bound");
  o.req("expr", b.expr);
  o.req("min", b.min);
  o.req("max", b.max);
  if (!o.ok()) return;
  if (b.expr.empty()) return o.fail(o.field("expr"), "empty expression");
  if (b.min < 0 || b.max < 0) {
    return o.fail(r.field("bound"), absl::StrCat("negative limit (min ", b.min, ", max ", b.max,
                                                 ")"));
  }
  if (b.min == 0 && b.max == 0) return o.fail(r.field("bound"), "neither min nor max is set");
  if (b.max != 0 && b.min > b.max) {
    o.fail(r.field("bound"), absl::StrCat("min ", b.min, " > max ", b.max));
  }
}

void read_plan_fields(ObjectReader& m, Plan& p) {
  m.req("format_version", p.format_version);
  m.req("kiln_version", p.kiln_version);
  m.req("arch", p.arch);
  m.req("nvrtc_version", p.nvrtc_version);
  m.req("nvrtc_flags", p.nvrtc_flags);
  read_model(m.object("model"), p.model);
  m.req("model_path", p.model_path);
  m.req("tokenizer", p.tokenizer_path);
  {
    ObjectReader l = m.object("limits");
    l.req("max_tokens", p.limits.max_tokens);
    l.req("max_seqs", p.limits.max_seqs);
    l.req("max_context", p.limits.max_context);
    l.req("max_pool_pages", p.limits.max_pool_pages);
    l.req("dtype", p.limits.dtype);
  }
  m.req("ir", p.ir);
  m.objects("kernels", [&](ObjectReader& r) {
    PlanKernel& k = p.kernels.emplace_back();
    r.req("key", k.key);
    r.req("family", k.family);
    r.objects("params", [&](ObjectReader& pr) {
      EntryParam& e = k.params.emplace_back();
      pr.req("name", e.name);
      pr.req("type", e.type);
    });
    r.req("registers", k.registers);
    r.req("shared_bytes", k.shared_bytes);
    r.req("stack_bytes", k.stack_bytes);
    r.req("spill_bytes", k.spill_bytes);
    r.req("cubin_blob", k.cubin_blob);
    r.req("ptx_blob", k.ptx_blob);
    r.req("source_blob", k.source_blob);
  });
  m.objects("launches", [&](ObjectReader& r) {
    PlanLaunch& l = p.launches.emplace_back();
    r.req("node", l.node);
    r.req("kernel", l.kernel);
    r.req("grid", l.rule.grid);
    r.req("block", l.rule.block);
    r.req("dynamic_shared_bytes", l.rule.dynamic_shared_bytes);
    r.req("when", l.rule.when);
    r.objects("args", [&](ObjectReader& a) { read_launch_arg(a, l.args.emplace_back()); });
    read_bound(r, l.rule.bound);
  });
  m.objects("gemms", [&](ObjectReader& r) {
    PlanGemm& g = p.gemms.emplace_back();
    r.req("node", g.node);
    r.req("m", g.m);
    r.req("n", g.n);
    r.req("k", g.k);
    r.req("a_dtype", g.a_dtype);
    r.req("b_dtype", g.b_dtype);
    r.req("out_dtype", g.out_dtype);
    r.req("epilogue", g.epilogue);
    r.req("a", g.a);
    r.req("b", g.b);
    r.req("bias", g.bias);
    r.req("residual", g.residual);
    r.req("out", g.out);
    read_bound(r, g.bound);
  });
  m.objects("workspaces", [&](ObjectReader& r) {
    PlanWorkspace& w = p.workspaces.emplace_back();
    r.req("name", w.name);
    r.req("bytes", w.bytes);
    r.opt("zeroed", w.zeroed);
    if (r.has("addresses")) {
      r.objects("addresses", [&](ObjectReader& a) {
        read_launch_arg(a, w.addresses.emplace_back());
        if (a.ok() && w.addresses.back().kind != LaunchArg::Kind::kTensor &&
            w.addresses.back().kind != LaunchArg::Kind::kWorkspace &&
            w.addresses.back().kind != LaunchArg::Kind::kRuntime) {
          a.fail(a.field("kind"), "an address table holds tensors, workspaces or runtime buffers");
        }
      });
    }
  });
  if (m.has("persistent")) {
    ObjectReader r = m.object("persistent");
    PlanPersistent& ps = p.persistent.emplace();
    r.req("launch", ps.launch);
    r.req("stages", ps.stages);
  }
  if (m.has("cascades")) {
    m.objects("cascades", [&](ObjectReader& r) {
      PlanCascade& c = p.cascades.emplace_back();
      r.req("decode", c.decode);
      r.req("prefix", c.prefix);
      r.req("suffix", c.suffix);
    });
  }
  m.objects("aliases", [&](ObjectReader& r) {
    PlanAlias& a = p.aliases.emplace_back();
    r.req("value", a.value);
    r.req("of", a.of);
  });
  m.objects("constants", [&](ObjectReader& r) {
    PlanConstant& c = p.constants.emplace_back();
    r.req("value", c.value);
    r.req("dtype", c.dtype);
    r.req("scalar", c.scalar);
  });
  const json* memory = m.raw("memory_plan");
  if (memory != nullptr && !memory->is_null()) {
    ObjectReader r = m.object("memory_plan");
    MemoryPlan& mp = p.memory.emplace();
    r.req("arena_bytes", mp.arena_bytes);
    r.req("lower_bound_bytes", mp.lower_bound_bytes);
    r.req("alignment", mp.alignment);
    r.objects("buffers", [&](ObjectReader& b) {
      MemoryPlan::Buffer& buf = mp.buffers.emplace_back();
      b.req("value", buf.value);
      b.req("offset", buf.offset);
      b.req("size", buf.size);
      b.req("first_use", buf.first_use);
      b.req("last_use", buf.last_use);
      b.opt("alias_of", buf.alias_of);
    });
  }
  {
    ObjectReader r = m.object("kv_layout");
    r.req("page_size", p.kv.page_size);
    r.req("layout", p.kv.layout);
    r.req("dtype", p.kv.dtype);
    r.req("num_layers", p.kv.num_layers);
    r.req("num_kv_heads", p.kv.num_kv_heads);
    r.req("head_dim", p.kv.head_dim);
    p.limits.page_size = p.kv.page_size;  // the one home of the page size is the KV layout
    if (p.kv.dtype == DType::kFP8E4M3) p.limits.kv_dtype = p.kv.dtype;  // and of its dtype
  }
  m.opt("ranks", p.ranks);
  if (m.ok() && (p.ranks < 1 || p.ranks > kMaxPlanRanks)) {
    m.fail(m.field("ranks"), absl::StrCat("must be in [1, ", kMaxPlanRanks, "], got ", p.ranks));
  }
  if (m.has("collectives")) {
    m.objects("collectives", [&](ObjectReader& r) {
      PlanCollective& c = p.collectives.emplace_back();
      r.req("node", c.node);
      r.req("kind", c.kind);
      r.req("dtype", c.dtype);
      r.req("in", c.in);
      r.req("out", c.out);
      r.req("outer", c.outer);
      r.req("inner", c.inner);
      if (r.ok() && c.inner < 0) r.fail(r.field("inner"), "must be >= 0");
    });
  }
  m.objects("weights", [&](ObjectReader& r) {
    PlanWeight& w = p.weights.emplace_back();
    r.req("name", w.name);
    r.req("dtype", w.dtype);
    r.req("shape", w.shape);
    r.opt("rank", w.rank);
    if (r.ok() && (w.rank < -1 || w.rank >= p.ranks)) {
      r.fail(r.field("rank"), absl::StrCat("must be -1 (every rank) or a rank below ", p.ranks));
    }
    if (r.has("parts")) {
      r.objects("parts", [&](ObjectReader& pr) {
        PlanWeightPart& part = w.parts.emplace_back();
        pr.req("source", part.source);
        const bool cols = pr.has("cols");
        part.axis = cols ? SliceAxis::kCols : SliceAxis::kRows;
        const char* key = slice_axis_name(part.axis);
        std::vector<int64_t> range;
        pr.req(key, range);
        if (!pr.ok()) return;
        if (cols && pr.has("rows")) return pr.fail(pr.field("rows"), "a part is rows or cols");
        if (range.size() != 2 || range[0] < 0 || range[1] < range[0]) {
          pr.fail(pr.field(key), "must be [begin, end] with 0 <= begin <= end");
          return;
        }
        part.begin = range[0];
        part.end = range[1];
      });
      if (r.ok() && w.parts.empty()) r.fail(r.field("parts"), "must list at least one part");
    } else if (r.has("blob")) {
      r.req("blob", w.blob);
      if (r.ok() && w.blob < 0) r.fail(r.field("blob"), "must be >= 0");
    } else {
      r.req("file", w.file);
      r.req("source_name", w.source_name);
      r.req("offset", w.offset);
      r.req("size", w.size);
      r.req("xxh3", w.xxh3);
    }
  });
}

}  // namespace

const char* param_type_name(ParamType type) { return name_in(kParamTypes, type); }
const char* launch_arg_kind_name(LaunchArg::Kind kind) { return name_in(kArgKinds, kind); }
const char* runtime_input_name(RuntimeInput input) { return name_in(kRuntimeInputs, input); }
const char* step_kind_name(StepKind kind) { return name_in(kStepKinds, kind); }
const char* gemm_epilogue_name(GemmEpilogue epilogue) { return name_in(kEpilogues, epilogue); }
const char* kv_page_layout_name(KvPageLayout layout) { return name_in(kPageLayouts, layout); }
const char* collective_kind_name(CollectiveKind kind) { return name_in(kCollectiveKinds, kind); }
std::optional<GemmEpilogue> parse_gemm_epilogue(std::string_view name) {
  return parse_in(kEpilogues, name);
}

json manifest_to_json(const Plan& p, const std::vector<BlobRecord>& blobs) {
  json kernels = json::array(), launches = json::array(), gemms = json::array(),
       workspaces = json::array(), aliases = json::array(), constants = json::array(),
       weights = json::array(), blob_table = json::array();
  for (const PlanKernel& k : p.kernels) kernels.push_back(kernel_json(k));
  for (const PlanLaunch& l : p.launches) launches.push_back(launch_json(l));
  for (const PlanGemm& g : p.gemms) gemms.push_back(gemm_json(g));
  for (const PlanWorkspace& w : p.workspaces) {
    json j = {{"name", w.name}, {"bytes", w.bytes}};
    if (w.zeroed) j["zeroed"] = true;
    if (!w.addresses.empty()) {
      json a = json::array();
      for (const LaunchArg& arg : w.addresses) a.push_back(launch_arg_json(arg));
      j["addresses"] = std::move(a);
    }
    workspaces.push_back(std::move(j));
  }
  for (const PlanAlias& a : p.aliases) aliases.push_back({{"value", a.value}, {"of", a.of}});
  for (const PlanConstant& c : p.constants) {
    constants.push_back(
        {{"value", c.value}, {"dtype", dtype_name(c.dtype)}, {"scalar", number(c.scalar)}});
  }
  for (const PlanWeight& w : p.weights) weights.push_back(weight_json(w));
  json collectives = json::array();
  for (const PlanCollective& c : p.collectives) {
    collectives.push_back({{"node", c.node},
                           {"kind", name_in(kCollectiveKinds, c.kind)},
                           {"dtype", dtype_name(c.dtype)},
                           {"in", c.in},
                           {"out", c.out},
                           {"outer", c.outer},
                           {"inner", c.inner}});
  }
  for (const BlobRecord& b : blobs) {
    blob_table.push_back(
        {{"name", b.name}, {"offset", b.offset}, {"size", b.size}, {"xxh3", b.xxh3}});
  }
  json out = {{"format_version", p.format_version},
          {"kiln_version", p.kiln_version},
          {"arch", p.arch},
          {"nvrtc_version", p.nvrtc_version},
          {"nvrtc_flags", p.nvrtc_flags},
          {"model", model_json(p.model)},
          {"model_path", p.model_path},
          {"tokenizer", p.tokenizer_path},
          // The page size is not repeated here: the KV layout holds it.
          {"limits",
           {{"max_tokens", p.limits.max_tokens},
            {"max_seqs", p.limits.max_seqs},
            {"max_context", p.limits.max_context},
            {"max_pool_pages", p.limits.max_pool_pages},
            {"dtype", dtype_name(p.limits.dtype)}}},
          {"ir", p.ir},
          {"kernels", kernels},
          {"launches", launches},
          {"gemms", gemms},
          {"workspaces", workspaces},
          {"aliases", aliases},
          {"constants", constants},
          {"memory_plan", memory_json(p.memory)},
          {"kv_layout", kv_json(p.kv)},
          {"ranks", p.ranks},
          {"collectives", collectives},
          {"weights", weights},
          {"blobs", blob_table}};
  if (p.persistent) {
    out["persistent"] = {{"launch", p.persistent->launch}, {"stages", p.persistent->stages}};
  }
  if (!p.cascades.empty()) {
    json cascades = json::array();
    for (const PlanCascade& c : p.cascades) {
      cascades.push_back({{"decode", c.decode}, {"prefix", c.prefix}, {"suffix", c.suffix}});
    }
    out["cascades"] = std::move(cascades);
  }
  return out;
}

absl::StatusOr<Manifest> manifest_from_json(const json& j) {
  absl::Status error;
  Manifest out;
  ObjectReader m(j, "manifest", &error);
  read_plan_fields(m, out.plan);
  m.objects("blobs", [&](ObjectReader& r) {
    BlobRecord& b = out.blobs.emplace_back();
    r.req("name", b.name);
    r.req("offset", b.offset);
    r.req("size", b.size);
    r.req("xxh3", b.xxh3);
  });
  if (!error.ok()) return error;
  return out;
}

std::string dump_manifest(const json& j) {
  return j.dump(1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

}  // namespace kiln
