#include "runtime/check/checked_backend.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "ir/op_kind.h"
#include "ir/printer.h"

namespace kiln {

/// Downloads a node's operands before it runs and its results after, and checks the results
/// against the reference running the reference IR's node of the same index on those operands.
///
/// Fused kernels can cross node boundaries: a GEMV normalizes its input itself (the rmsnorm node
/// launches nothing at that step) or writes the SwiGLU after it (the GEMM's own [M, 2F] result
/// and the slices of it are never written), and rope_kv_append writes the k rope's result at the
/// q rope. The observed step starts from a poisoned arena (CudaBackend::run_step_observed), so a
/// value no launch wrote reads back as all NaN (all -1 for i32): the reference's result stands in
/// for it downstream, and it is not compared. A value that a node without launches of its own
/// has on the GPU (written by a neighbour's fused kernel) is checked when it is first read.
class CheckedBackend::Observer : public CudaBackend::NodeObserver {
 public:
  Observer(CheckedBackend& b, int step, bool decode, const CascadeLayout* cascade)
      : b_(b), step_(step), decode_(decode), cascade_(cascade), names_(b.gpu_.graph()) {}

  absl::Status before(const Node& node) override {
    observed_.insert(&node);
    operands_.clear();
    running_ = &node;
    folded_.clear();
    for (const Value* v : node.inputs) {
      if (v->kind == ValueKind::kParam) {  // the reference reads its own copy of the weight
        operands_.emplace_back();
        continue;
      }
      absl::StatusOr<HostTensor> t = operand(*v);
      if (!t.ok()) return annotate(node, t.status());
      operands_.push_back(*std::move(t));
      // An operand no launch wrote: this node's launch did its producer's work.
      const Node* p = v->producer;
      if (stand_in_.count(v) && p != nullptr && p->op != OpKind::kReshape &&
          p->op != OpKind::kSlice &&
          std::find(folded_.begin(), folded_.end(), p) == folded_.end()) {
        folded_.push_back(p);
      }
    }
    return absl::OkStatus();
  }

  absl::Status after(const Node& node) override {
    absl::StatusOr<std::vector<HostTensor>> want = run_reference(node, std::move(operands_));
    operands_.clear();
    if (!want.ok()) return annotate(node, want.status());
    for (size_t j = 0; j < node.outputs.size(); ++j) {
      absl::StatusOr<HostTensor> got = b_.gpu_.download_value(*node.outputs[j]);
      if (!got.ok()) return annotate(node, got.status());
      if (unwritten(*got)) {
        stand_in_[node.outputs[j]] = (*want)[j];
        continue;
      }
      if (absl::Status s = record(node, j, *got, (*want)[j]); !s.ok()) return annotate(node, s);
    }
    return absl::OkStatus();
  }

 private:
  static bool unwritten(const HostTensor& t) {
    if (t.numel() == 0) return false;
    if (t.is_index()) return std::all_of(t.i.begin(), t.i.end(), [](int32_t v) { return v == -1; });
    return std::all_of(t.f.begin(), t.f.end(), [](float v) { return std::isnan(v); });
  }

  absl::StatusOr<std::vector<HostTensor>> run_reference(const Node& node,
                                                        std::vector<HostTensor> operands) {
    const Node& reference = *b_.reference_.nodes()[b_.gpu_.graph().index_of(&node)];
    return run_node_alone(b_.reference_, reference, std::move(operands), b_.params_,
                          b_.gpu_.step_symbols(), b_.gpu_.last_step().cascade ? cascade_ : nullptr);
  }

  // The operand `v` as the GPU holds it, or the reference's result where no launch wrote it.
  absl::StatusOr<HostTensor> operand(const Value& v) {
    if (auto it = stand_in_.find(&v); it != stand_in_.end()) return it->second;
    absl::StatusOr<HostTensor> t = b_.gpu_.download_value(v);
    if (!t.ok()) return t.status();
    const Node* p = v.producer;
    if (p == nullptr || observed_.count(p) || p->op == OpKind::kConstant) return t;
    // A node with no launch of its own this step (a view, or work a fused kernel took over):
    // its reference result on its own operands, compared where the GPU has the value.
    std::vector<HostTensor> inputs;
    for (const Value* in : p->inputs) {
      if (in->kind == ValueKind::kParam) {
        inputs.emplace_back();
        continue;
      }
      absl::StatusOr<HostTensor> x = operand(*in);
      if (!x.ok()) return x.status();
      inputs.push_back(*std::move(x));
    }
    absl::StatusOr<std::vector<HostTensor>> want = run_reference(*p, std::move(inputs));
    if (!want.ok()) return want.status();
    observed_.insert(p);
    HostTensor result = *t;
    for (size_t j = 0; j < p->outputs.size(); ++j) {
      const Value* out = p->outputs[j];
      absl::StatusOr<HostTensor> got = out == &v ? *t : b_.gpu_.download_value(*out);
      if (!got.ok()) return got.status();
      if (unwritten(*got)) {
        stand_in_[out] = (*want)[j];
        if (out == &v) result = (*want)[j];
        continue;
      }
      // Views are their base's bytes: checked through the base, not again.
      if (p->op == OpKind::kSlice || p->op == OpKind::kReshape) continue;
      if (absl::Status s = record(*p, j, *got, (*want)[j]); !s.ok()) return s;
    }
    return result;
  }

  absl::Status record(const Node& node, size_t output, const HostTensor& got,
                      const HostTensor& want) {
    absl::StatusOr<OutputError> e = compare_tensors(got, want);
    if (!e.ok()) return e.status();
    const int index = b_.gpu_.graph().index_of(&node);
    NodeCheck c;
    c.step = step_;
    c.decode = decode_;
    c.node = index;
    c.op = op_name(node.op);
    c.kernel = b_.kernel_of_node_[index];
    c.value = names_(node.outputs[output]);
    c.error = *e;
    c.tolerance = result_tolerance(*b_.reference_.nodes()[index], output);
    for (const Node* f : &node == running_ ? folded_ : std::vector<const Node*>{}) {
      c.folded.push_back(absl::StrCat("node ", b_.gpu_.graph().index_of(f), " ", op_name(f->op)));
    }
    b_.checks_.push_back(std::move(c));
    return absl::OkStatus();
  }

  absl::Status annotate(const Node& node, const absl::Status& s) const {
    return absl::Status(s.code(), absl::StrCat("--check: node ", b_.gpu_.graph().index_of(&node),
                                               " ", op_name(node.op), ": ", s.message()));
  }

  CheckedBackend& b_;
  int step_;
  bool decode_;
  const CascadeLayout* cascade_;  // the step's layout; the reference's when the GPU ran it
  ValueNames names_;
  std::vector<HostTensor> operands_;  // of the node between before() and after()
  const Node* running_ = nullptr;      // the node between before() and after()
  std::vector<const Node*> folded_;   // its operands' producers that no launch ran (stood in)
  std::set<const Node*> observed_;    // nodes checked (or computed) this step
  std::map<const Value*, HostTensor> stand_in_;  // reference results of values no launch wrote
};

CheckedBackend::CheckedBackend(CudaBackend& gpu, const Graph& reference, const ParamViews& params,
                               int steps)
    : gpu_(gpu), reference_(reference), params_(params), steps_(steps) {}

absl::StatusOr<std::unique_ptr<CheckedBackend>> CheckedBackend::create(CudaBackend& gpu,
                                                                       const Graph& reference,
                                                                       const ParamViews& params,
                                                                       int steps) {
  const Graph& g = gpu.graph();
  if (g.num_nodes() != reference.num_nodes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the reference IR has ", reference.num_nodes(), " nodes but the plan's has ",
                     g.num_nodes(), ": --check compares them node by node"));
  }
  for (int i = 0; i < g.num_nodes(); ++i) {
    const Node& a = *g.nodes()[i];
    const Node& b = *reference.nodes()[i];
    if (a.op != b.op || a.inputs.size() != b.inputs.size() || a.outputs.size() != b.outputs.size()) {
      return absl::InvalidArgumentError(absl::StrCat("node ", i, " is ", op_name(a.op),
                                                     " in the plan but ", op_name(b.op),
                                                     " in the reference IR"));
    }
  }
  std::unique_ptr<CheckedBackend> b(new CheckedBackend(gpu, reference, params, steps));
  // What implements each node, for the table: its kernels' keys and "cublasLt" for a GEMM.
  std::vector<std::vector<std::string>> parts(g.num_nodes());
  auto add = [&](int node, std::string what) {
    if (node < 0 || node >= g.num_nodes()) return;
    auto& p = parts[node];
    if (std::find(p.begin(), p.end(), what) == p.end()) p.push_back(std::move(what));
  };
  const Plan& plan = gpu.plan();
  for (const PlanLaunch& l : plan.launches) {
    // The persistent decode kernel spans every node of a decode step; checked steps run its
    // stages one launch at a time (CudaBackend::run_step_observed), so it implements no node here.
    if (l.kernel >= 0 && l.kernel < static_cast<int>(plan.kernels.size()) &&
        plan.kernels[l.kernel].family != KernelFamily::kPersistentDecode) {
      add(l.node, plan.kernels[l.kernel].key);
    }
  }
  for (const PlanGemm& m : plan.gemms) add(m.node, "cublasLt");
  for (const auto& p : parts) b->kernel_of_node_.push_back(absl::StrJoin(p, " | "));
  return b;
}

absl::StatusOr<StepResult> CheckedBackend::run_step(const StepRequest& step) {
  if (steps_checked_ >= steps_) return gpu_.run_step(step);
  Observer observer(*this, steps_checked_, step.inputs.is_decode(),
                    step.inputs.cascade ? &*step.inputs.cascade : nullptr);
  ++steps_checked_;
  return gpu_.run_step_observed(step, observer);
}

const NodeCheck* CheckedBackend::first_divergence() const {
  for (const NodeCheck& c : checks_) {
    if (!c.ok()) return &c;
  }
  return nullptr;
}

std::string format_checks(const std::vector<NodeCheck>& checks) {
  auto step_name = [](const NodeCheck& c) {
    return absl::StrCat(c.step, c.decode ? " decode" : " prefill");
  };
  auto shorten = [](const std::string& s) {
    return s.size() <= 48 ? s : s.substr(0, 45) + "...";
  };
  std::string out = absl::StrFormat("%-10s %5s  %-18s %-48s %-7s %10s %10s %9s  %s\n", "step",
                                    "node", "op", "kernel", "value", "max_abs", "max_rel", "tol",
                                    "");
  const NodeCheck* first = nullptr;
  for (const NodeCheck& c : checks) {
    absl::StrAppend(&out, absl::StrFormat("%-10s %5d  %-18s %-48s %-7s %10.3g %10.3g %9.2g  %s\n",
                                          step_name(c), c.node, c.op, shorten(c.kernel), c.value,
                                          c.error.max_abs, c.error.relative, c.tolerance,
                                          c.ok() ? "ok" : "DIVERGES"));
    if (first == nullptr && !c.ok()) first = &c;
  }
  if (first != nullptr) {
    absl::StrAppend(&out, absl::StrFormat(
                              "first divergent op: node %d %s (%s)%s, step %s: relative error %.3g "
                              "> tolerance %.2g (max abs %.3g, reference max %.3g)\n",
                              first->node, first->op, first->kernel,
                              first->folded.empty()
                                  ? ""
                                  : absl::StrCat(" [its launch also did ",
                                                 absl::StrJoin(first->folded, ", "), "]"),
                              step_name(*first),
                              first->error.relative, first->tolerance, first->error.max_abs,
                              first->error.max_reference));
  } else {
    absl::StrAppend(&out, "every checked op is within its tolerance (", checks.size(),
                    " results)\n");
  }
  return out;
}

}  // namespace kiln
