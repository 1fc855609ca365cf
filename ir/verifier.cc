// Verifier implementation.
#include "ir/verifier.h"

#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "ir/printer.h"
#include "ir/type_inference.h"

namespace kiln {
namespace {

// An echoed IR line is cut short: a hostile or generated file can hold a megabyte-long
// attribute or name on one line, and the error must stay readable.
std::string clip_for_message(absl::string_view text) {
  constexpr size_t kMaxEcho = 240;
  if (text.size() <= kMaxEcho) return std::string(text);
  return absl::StrCat(text.substr(0, kMaxEcho), "... (", text.size() - kMaxEcho, " more bytes)");
}

absl::Status check_type_symbols(const Type& type, const SymbolTable& symbols,
                                absl::string_view where) {
  for (const Dim& d : type.shape) {
    if (d.is_symbolic() && symbols.find(d.symbol) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": type ", type.to_string(), " uses undeclared symbol ", d.symbol));
    }
    if (!d.is_symbolic() && d.value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": negative dim in ", type.to_string()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status verify(const Graph& graph) {
  ValueNames names(graph);
  std::unordered_set<const Value*> defined;
  std::unordered_set<std::string> declared_names;
  for (const auto* list : {&graph.inputs(), &graph.params()}) {
    for (const Value* v : *list) {
      std::string where = names(v);
      if (!is_valid_value_name(v->name)) {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid name '", clip_for_message(v->name), "' for ", where));
      }
      if (!declared_names.insert(where).second) {
        return absl::InvalidArgumentError(absl::StrCat(where, " is declared twice"));
      }
      if (absl::Status s = check_type_symbols(v->type, graph.symbols(), where); !s.ok()) return s;
      if (!v->parts.empty()) {
        // A derived param stacks whole rows: a constant-shape tensor whose first dim is the sum
        // of its parts' row counts.
        int64_t rows = 0;
        for (const ParamPart& p : v->parts) {
          if (p.row_begin < 0 || p.row_end <= p.row_begin) {
            return absl::InvalidArgumentError(absl::StrCat(where, ": part \"", p.source,
                                                           "\" has an empty row range"));
          }
          rows += p.row_end - p.row_begin;
        }
        if (v->type.rank() == 0 || v->type.shape[0].is_symbolic() ||
            v->type.shape[0].value != rows) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": its parts hold ", rows, " rows but its type is ", v->type.to_string()));
        }
      }
      defined.insert(v);
    }
  }
  for (const auto& node : graph.nodes()) {
    auto fail = [&](absl::string_view msg) {
      return absl::InvalidArgumentError(
          absl::StrCat(clip_for_message(print_node(*node, names)), ": ", clip_for_message(msg)));
    };
    const OpTraits traits = op_traits(node->op);
    if (traits.num_outputs >= 0 && static_cast<int>(node->outputs.size()) != traits.num_outputs) {
      return fail(absl::StrCat("has ", node->outputs.size(), " results, ", op_name(node->op),
                               " has ", traits.num_outputs));
    }
    std::vector<Type> input_types;
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      const Value* in = node->inputs[i];
      if (in == nullptr || !defined.count(in)) {
        return fail(absl::StrCat("input ", i, " (", in ? names(in) : "null",
                                 ") is not defined before this node"));
      }
      input_types.push_back(in->type);
    }
    for (const Value* out : node->outputs) {
      if (defined.count(out)) return fail(absl::StrCat(names(out), " is defined twice"));
      if (out->producer != node.get())
        return fail(absl::StrCat(names(out), " has another producer"));
      if (absl::Status s = check_type_symbols(out->type, graph.symbols(), names(out)); !s.ok()) {
        return fail(s.message());
      }
      if (!out->name.empty() && !is_valid_value_name(out->name)) {
        return fail(absl::StrCat("invalid result name '", out->name, "'"));
      }
      if (!out->name.empty() && !declared_names.insert(names(out)).second) {
        return fail(absl::StrCat(names(out), " is defined twice"));
      }
    }
    absl::StatusOr<std::vector<Type>> inferred =
        infer_types(node->op, input_types, node->attrs, graph.symbols());
    if (!inferred.ok()) return fail(inferred.status().message());
    if (inferred->size() != node->outputs.size()) {
      return fail(absl::StrCat("has ", node->outputs.size(), " results, ", op_name(node->op),
                               " with these operands has ", inferred->size()));
    }
    for (size_t i = 0; i < node->outputs.size(); ++i) {
      if (!((*inferred)[i] == node->outputs[i]->type)) {
        return fail(absl::StrCat("result ", i, " is declared ", node->outputs[i]->type.to_string(),
                                 " but ", op_name(node->op), " produces ",
                                 (*inferred)[i].to_string()));
      }
    }
    for (const Value* out : node->outputs) defined.insert(out);
  }
  if (graph.outputs().empty()) return absl::InvalidArgumentError("graph has no outputs");
  std::unordered_set<std::string> output_names;
  for (const GraphOutput& o : graph.outputs()) {
    if (!output_names.insert(o.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("output ", o.name, " is declared twice"));
    }
    if (o.value == nullptr || !defined.count(o.value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("output ", o.name, " is not defined by any input, param or node"));
    }
  }
  return absl::OkStatus();
}

}  // namespace kiln
