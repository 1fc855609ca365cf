// Family persistent_decode (see persistent_decode.h).
#include "codegen/families/persistent_decode.h"

#include <algorithm>
#include <map>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "codegen/kernel_source.h"
#include "plan/launch_binding.h"
#include "plan/launch_expr.h"

namespace kiln {
namespace {

// Families whose templates step through their work by blockDim.x (grid-stride loops): inside the
// persistent kernel blockDim.x is the persistent block, so their launches must use that block.
bool strides_by_block(KernelFamily f) {
  switch (f) {
    case KernelFamily::kRope:
    case KernelFamily::kKvAppend:
    case KernelFamily::kRopeKvAppend:
    case KernelFamily::kEmbedding:
    case KernelFamily::kLastTokenRows:
    case KernelFamily::kFusedElementwise: return true;
    default: return false;
  }
}

// Families whose templates read task_block()/task_grid() and block_sync<> (kernels/common.cuh):
// the ones a decode step launches.
bool runs_as_tasks(KernelFamily f) {
  switch (f) {
    case KernelFamily::kGemv:
    case KernelFamily::kFlashAttentionDecode:
    case KernelFamily::kRmsNorm:
    case KernelFamily::kRmsNormResidual:
    case KernelFamily::kRope:
    case KernelFamily::kKvAppend:
    case KernelFamily::kRopeKvAppend:
    case KernelFamily::kEmbedding:
    case KernelFamily::kLastTokenRows:
    case KernelFamily::kFusedElementwise: return true;
    default: return false;
  }
}

// An expression with no symbols, or nullopt.
std::optional<int64_t> constant_expr(const std::string& e) {
  absl::StatusOr<int64_t> v = eval_launch_expr(e, {});
  if (!v.ok()) return std::nullopt;
  return *v;
}

bool is_pointer(ParamType t) { return t == ParamType::kPointer; }

// The C spelling of a kind's integer argument or grid extent: a literal, or the entry parameter
// (a field of the kernel's `PersistentInts E`) that carries the expression.
std::string int_ref(const std::string& expr, const std::vector<std::string>& int_params) {
  if (std::optional<int64_t> c = constant_expr(expr)) return absl::StrCat(*c);
  auto it = std::find(int_params.begin(), int_params.end(), expr);
  return absl::StrCat("E.e", it - int_params.begin());
}

}  // namespace

int PersistentDecodeSpec::pointer_count(int k) const {
  int n = 0;
  for (const EntryDecl& d : kinds[k].spec->entry()) {
    n += plan_params({d})[0].type == ParamType::kPointer;
  }
  return n;
}

std::string PersistentDecodeSpec::key() const {
  // Everything the source bakes in: each kind's kernel, grid and scalar arguments, the stages.
  std::string payload;
  for (const PersistentKind& k : kinds) {
    absl::StrAppend(&payload, k.spec->key(), "|", absl::StrJoin(k.grid, ","), "|", k.threads, "|",
                    k.dynamic_shared_bytes);
    for (const LaunchArg& a : k.args) {
      absl::StrAppend(&payload, "|", static_cast<int>(a.kind), ":", a.expr, ":", a.real);
    }
    payload += "\n";
  }
  absl::StrAppend(&payload, absl::StrJoin(stage_kinds, ","), "\n", absl::StrJoin(int_params, ";"));
  return spec_key(family(), dtype,
                  {{"s", static_cast<int64_t>(stage_kinds.size())},
                   {"k", static_cast<int64_t>(kinds.size())},
                   {"t", threads},
                   {"b", blocks_per_sm}},
                  {}, payload);
}

std::vector<EntryDecl> PersistentDecodeSpec::entry() const {
  std::vector<EntryDecl> e = {{"const unsigned long long*", "ptrs"}, {"int*", "counters"}};
  for (size_t i = 0; i < int_params.size(); ++i) e.push_back({"int", absl::StrCat("e", i)});
  return e;
}

absl::StatusOr<KernelTemplate> PersistentDecodeSpec::kernel_template() const {
  return absl::UnimplementedError("the persistent decode kernel is assembled from its kinds' templates");
}

absl::StatusOr<std::string> PersistentDecodeSpec::source() const {
  if (kinds.empty() || stage_kinds.empty()) {
    return absl::InvalidArgumentError("a persistent decode kernel needs at least one stage");
  }
  std::vector<KernelTemplate> templates;
  std::set<std::string> includes;
  for (const PersistentKind& k : kinds) {
    absl::StatusOr<KernelTemplate> t = k.spec->kernel_template();
    if (!t.ok()) {
      return absl::Status(t.status().code(),
                          absl::StrCat(k.spec->key(), ": ", t.status().message()));
    }
    includes.insert(t->include);
    templates.push_back(*std::move(t));
  }
  std::string s = generated_banner(key());
  absl::StrAppend(&s, "#define KILN_PERSISTENT 1\n#include \"persistent_decode.cuh\"\n");
  for (const std::string& inc : includes) absl::StrAppend(&s, "#include \"", inc, "\"\n");
  // The step's integer launch arguments, one field per distinct expression.
  absl::StrAppend(&s, "\nstruct PersistentInts {\n  int dummy");
  for (size_t i = 0; i < int_params.size(); ++i) absl::StrAppend(&s, ", e", i);
  absl::StrAppend(&s, ";\n};\n");

  for (size_t k = 0; k < kinds.size(); ++k) {
    const PersistentKind& kind = kinds[k];
    const KernelTemplate& t = templates[k];
    absl::StatusOr<std::string> type = kernel_type_name(t.kiln_t);
    if (!type.ok()) return type.status();
    const std::vector<EntryDecl> entry = kind.spec->entry();
    if (entry.size() != kind.args.size()) {
      return absl::InternalError(absl::StrCat(kind.spec->key(), ": ", kind.args.size(),
                                              " arguments for ", entry.size(), " parameters"));
    }
    // The entry's parameters as locals: pointers from the stage's slice of the address table,
    // integers from the step's arguments, floats baked.
    std::string params;
    int slot = 0;
    for (size_t i = 0; i < entry.size(); ++i) {
      const EntryDecl& d = entry[i];
      const LaunchArg& a = kind.args[i];
      switch (plan_params({d})[0].type) {
        case ParamType::kPointer:
          absl::StrAppend(&params, "  ", d.c_type, " ", d.name, " = (", d.c_type, ")p[", slot++,
                          "];\n");
          break;
        case ParamType::kI32:
        case ParamType::kI64:
          absl::StrAppend(&params, "  const ", d.c_type, " ", d.name, " = ",
                          int_ref(a.expr, int_params), ";\n");
          break;
        case ParamType::kF32:
          absl::StrAppend(&params, "  const float ", d.name, " = ", float_literal(a.real), ";\n");
          break;
      }
    }
    absl::StrAppend(&s, "\n// kind ", k, ": ", kind.spec->key(), ", grid (",
                    absl::StrJoin(kind.grid, ", "), "), ", kind.threads, " threads\nnamespace kiln_kind_",
                    k, " {\ntypedef ", *type, " kiln_t;\n", t.config,
                    "\n__device__ __forceinline__ void run(const unsigned long long* p, const "
                    "PersistentInts& E) {\n  (void)E;\n",
                    params, "  ", t.call, "(", template_call_args(*kind.spec, t.call_args),
                    ");\n}\n");
    absl::StrAppend(&s, "__device__ __forceinline__ void prefetch(const unsigned long long* p, const "
                        "PersistentInts& E) {\n  (void)E;\n");
    if (!t.prefetch_call.empty()) {
      absl::StrAppend(&s, params, "  ", t.prefetch_call, "(", t.prefetch_args, ");\n");
    } else {
      absl::StrAppend(&s, "  (void)p;\n");
    }
    absl::StrAppend(&s, "}\n}  // namespace kiln_kind_", k, "\n");
  }

  // The stage table: kind and first address-table slot of every stage.
  std::vector<std::string> kind_of, slot_of;
  int slot = 0;
  for (int k : stage_kinds) {
    kind_of.push_back(absl::StrCat(k));
    slot_of.push_back(absl::StrCat(slot));
    slot += pointer_count(k);
  }
  const size_t n = stage_kinds.size();
  absl::StrAppend(&s, "\n__constant__ unsigned char kiln_stage_kind[", n, "] = {",
                  absl::StrJoin(kind_of, ", "), "};\n__constant__ unsigned int kiln_stage_slot[", n,
                  "] = {", absl::StrJoin(slot_of, ", "), "};\n");

  std::vector<EntryDecl> e = entry();
  absl::StrAppend(&s, "\nextern \"C\" __global__ void __launch_bounds__(", threads, ", ",
                  blocks_per_sm, ") ", key(),
                  "(", entry_signature(e), ") {\n  const PersistentInts E = {0");
  for (size_t i = 0; i < int_params.size(); ++i) absl::StrAppend(&s, ", e", i);
  absl::StrAppend(&s, "};\n");
  // grid_of(stage)
  absl::StrAppend(&s, "  auto grid_of = [&](int stage) {\n    uint3 g;\n    switch (kiln_stage_kind[stage]) {\n");
  for (size_t k = 0; k < kinds.size(); ++k) {
    absl::StrAppend(&s, "      case ", k, ": g.x = ", int_ref(kinds[k].grid[0], int_params),
                    ", g.y = ", int_ref(kinds[k].grid[1], int_params),
                    ", g.z = ", int_ref(kinds[k].grid[2], int_params), "; break;\n");
  }
  absl::StrAppend(&s, "      default: g.x = g.y = g.z = 0; break;\n    }\n    return g;\n  };\n");
  auto dispatch = [&](const char* fn, bool guard_threads) {
    std::string d = absl::StrCat("  auto ", fn, " = [&](int stage) {\n    const unsigned long "
                                 "long* p = ptrs + kiln_stage_slot[stage];\n    switch "
                                 "(kiln_stage_kind[stage]) {\n");
    for (size_t k = 0; k < kinds.size(); ++k) {
      absl::StrAppend(&d, "      case ", k, ": ");
      if (guard_threads && kinds[k].threads < threads) {
        absl::StrAppend(&d, "if (threadIdx.x < ", kinds[k].threads, ") ");
      }
      absl::StrAppend(&d, "kiln_kind_", k, "::", fn, "(p, E); break;\n");
    }
    absl::StrAppend(&d, "      default: break;\n    }\n  };\n");
    return d;
  };
  absl::StrAppend(&s, dispatch("prefetch", false), dispatch("run", true));
  absl::StrAppend(&s, "  kiln_k::persistent_tasks<", n,
                  ">(counters, grid_of, prefetch, run);\n}\n");
  return s;
}

absl::Status add_persistent_decode(LoweredGraph& l, const PersistentOptions& o) {
  if (o.max_sequences < 1 || o.max_sequences > kGemvMaxRows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the persistent decode kernel covers decode steps of 1 to ", kGemvMaxRows,
        " sequences, not ", o.max_sequences));
  }
  // Whether an op runs in every decode step of 1..max sequences (T = S), in none, or in some
  // (an error: the persistent kernel would have to exist twice).
  auto runs = [&](StepKind when, const StepBound& bound,
                  const std::string& what) -> absl::StatusOr<bool> {
    if (!launch_runs_in(when, /*prefill_step=*/false)) return false;
    int yes = 0;
    for (int64_t s = 1; s <= o.max_sequences; ++s) {
      bool admitted = true;
      if (!bound.empty()) {
        absl::StatusOr<int64_t> v = eval_launch_expr(bound.expr, {{"T", s}, {"S", s}});
        if (!v.ok()) {
          return absl::InvalidArgumentError(absl::StrCat(
              what, ": its bound ", bound.expr, " is not a function of the batch: ",
              v.status().message()));
        }
        admitted = bound_admits(bound, *v);
      }
      yes += admitted;
    }
    if (yes != 0 && yes != o.max_sequences) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " runs in some decode steps of at most ", o.max_sequences,
          " sequences and not in others; lower --persistent-max-batch below its bound (",
          bound.expr, " in [", bound.min, ", ", bound.max, "])"));
    }
    return yes != 0;
  };
  for (const PlanGemm& g : l.gemms) {
    const std::string what =
        absl::StrCat("node ", g.node, "'s GEMM (", g.out, ": N = ", g.n, ", K = ", g.k, ")");
    absl::StatusOr<bool> r = runs(StepKind::kAlways, g.bound, what);
    if (!r.ok()) return r.status();
    if (*r) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " runs on cuBLASLt in decode steps of at most ", o.max_sequences,
          " sequences; the persistent decode kernel needs every matmul there on the GEMV path "
          "(its weights must be bf16/f16 with K a multiple of 8)"));
    }
  }

  if (!l.collectives.empty()) {
    return absl::InvalidArgumentError(
        "a tensor-parallel plan has no persistent decode kernel: its collectives are NCCL calls "
        "between launches, which one kernel cannot wait for");
  }
  if (o.blocks_per_sm < 1 || o.blocks_per_sm > 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("--persistent-blocks-per-sm must be 1 to 4, not ", o.blocks_per_sm));
  }
  auto spec = std::make_shared<PersistentDecodeSpec>();
  spec->blocks_per_sm = o.blocks_per_sm;
  std::vector<int> stages;
  std::vector<LaunchArg> addresses;
  std::map<std::string, int> kind_ids;
  for (size_t i = 0; i < l.launches.size(); ++i) {
    const PlanLaunch& launch = l.launches[i];
    if (launch.node < 0) continue;  // sampling: its own launch after the step
    const PlanKernel& kernel = l.kernels[launch.kernel];
    const std::string what = absl::StrCat("node ", launch.node, "'s ", kernel.key);
    absl::StatusOr<bool> r = runs(launch.rule.when, launch.rule.bound, what);
    if (!r.ok()) return r.status();
    if (!*r) continue;
    if (!runs_as_tasks(kernel.family)) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": the ", family_name(kernel.family), " family cannot run inside the persistent "
          "decode kernel"));
    }
    const LaunchRule& rule = launch.rule;
    std::optional<int64_t> threads = constant_expr(rule.block[0]);
    std::optional<int64_t> smem = constant_expr(rule.dynamic_shared_bytes);
    if (!threads || *threads % 32 != 0 || rule.block[1] != "1" || rule.block[2] != "1" || !smem) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": its block (", absl::StrJoin(rule.block, ", "), ") and shared memory (",
          rule.dynamic_shared_bytes, ") must be constant, one-dimensional whole warps"));
    }
    PersistentKind kind;
    kind.spec = l.specs[launch.kernel];
    kind.grid = rule.grid;
    kind.threads = *threads;
    kind.dynamic_shared_bytes = *smem;
    std::string id = absl::StrCat(kernel.key, "|", absl::StrJoin(rule.grid, ","), "|", *threads,
                                  "|", *smem);
    for (size_t j = 0; j < launch.args.size(); ++j) {
      const LaunchArg& a = launch.args[j];
      if (is_pointer(kernel.params[j].type)) {
        addresses.push_back(a);
        kind.args.push_back(LaunchArg::tensor(""));  // the stage's own, from the address table
        id += "|p";
        continue;
      }
      if (kernel.params[j].type == ParamType::kF32) {
        if (a.kind != LaunchArg::Kind::kFloat) {
          return absl::InternalError(absl::StrCat(what, ": a float parameter bound to a non-literal"));
        }
        absl::StrAppend(&id, "|f", a.real);
      } else {
        if (a.kind != LaunchArg::Kind::kInt) {
          return absl::InternalError(absl::StrCat(what, ": an integer parameter bound to a non-expression"));
        }
        absl::StrAppend(&id, "|i", a.expr);
      }
      kind.args.push_back(a);
    }
    auto [it, added] = kind_ids.emplace(id, static_cast<int>(spec->kinds.size()));
    if (added) spec->kinds.push_back(std::move(kind));
    spec->stage_kinds.push_back(it->second);
    stages.push_back(static_cast<int>(i));
  }
  if (stages.empty()) {
    return absl::InvalidArgumentError("no launch runs in a decode step: nothing to make persistent");
  }
  // The block: the widest kind's; grid-stride families must have exactly it. Dynamic shared
  // memory: the most any kind takes (every task reuses it).
  for (PersistentKind& k : spec->kinds) {
    absl::StatusOr<KernelTemplate> t = k.spec->kernel_template();
    if (!t.ok()) return t.status();
    k.dynamic_shared_bytes = std::max(k.dynamic_shared_bytes, t->persistent_shared_bytes);
    spec->threads = std::max(spec->threads, k.threads);
    spec->dynamic_shared_bytes = std::max(spec->dynamic_shared_bytes, k.dynamic_shared_bytes);
  }
  if (spec->threads > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("a decode launch uses ", spec->threads, " threads, above a block's 1024"));
  }
  for (const PersistentKind& k : spec->kinds) {
    if (strides_by_block(k.spec->family()) && k.threads != spec->threads) {
      return absl::InvalidArgumentError(absl::StrCat(
          k.spec->key(), " strides by its block of ", k.threads, " threads, but the persistent "
          "decode kernel's block is ", spec->threads));
    }
  }
  // The entry's int parameters: every distinct non-constant expression, in first-use order.
  auto add_int = [&](const std::string& e) {
    if (constant_expr(e)) return;
    if (std::find(spec->int_params.begin(), spec->int_params.end(), e) == spec->int_params.end()) {
      spec->int_params.push_back(e);
    }
  };
  for (const PersistentKind& k : spec->kinds) {
    for (const std::string& g : k.grid) add_int(g);
    for (const LaunchArg& a : k.args) {
      if (a.kind == LaunchArg::Kind::kInt) add_int(a.expr);
    }
  }
  // The key's dtype: the first stage's (the embedding table's, in a Llama step).
  if (absl::StatusOr<KernelTemplate> t = spec->kinds.front().spec->kernel_template(); t.ok()) {
    spec->dtype = t->kiln_t;
  }

  // The kernel, its workspaces and its launch (at the first stage's node, before its launches).
  const std::string table = "persistent_addresses", counters = "persistent_counters";
  PlanWorkspace addr_ws;
  addr_ws.name = table;
  addr_ws.bytes = absl::StrCat(8 * static_cast<int64_t>(std::max<size_t>(addresses.size(), 1)));
  addr_ws.addresses = std::move(addresses);
  l.workspaces.push_back(std::move(addr_ws));
  PlanWorkspace counter_ws;
  counter_ws.name = counters;
  counter_ws.bytes = absl::StrCat(4 * (static_cast<int64_t>(stages.size()) + 1));
  counter_ws.zeroed = true;
  l.workspaces.push_back(std::move(counter_ws));

  PlanKernel pk;
  pk.key = spec->key();
  pk.family = spec->family();
  pk.params = plan_params(spec->entry());
  const int kernel_index = static_cast<int>(l.kernels.size());
  PlanLaunch launch;
  launch.node = l.launches[stages.front()].node;
  launch.kernel = kernel_index;
  launch.rule.grid = {"1", "1", "1"};  // the runtime's: every block resident (plan.h)
  launch.rule.block = {absl::StrCat(spec->threads), "1", "1"};
  launch.rule.dynamic_shared_bytes = absl::StrCat(spec->dynamic_shared_bytes);
  launch.rule.when = StepKind::kDecode;
  launch.rule.bound = {"S", 0, o.max_sequences};
  launch.args = {LaunchArg::workspace(table), LaunchArg::workspace(counters)};
  for (const std::string& e : spec->int_params) launch.args.push_back(LaunchArg::integer(e));
  l.kernels.push_back(std::move(pk));
  l.specs.push_back(spec);
  // Inserted before the first stage: the stage indices at or after it move up by one.
  const int at = stages.front();
  l.launches.insert(l.launches.begin() + at, std::move(launch));
  for (int& s : stages) ++s;
  for (PlanCascade& c : l.cascades) {
    for (int* i : {&c.decode, &c.prefix, &c.suffix}) *i += *i >= at ? 1 : 0;
  }
  l.persistent = PlanPersistent{at, std::move(stages)};
  return absl::OkStatus();
}

}  // namespace kiln
