// libFuzzer target: IR text through the parser; a graph that parses is verified, and a verified
// graph must print and re-parse to the same text and get a memory plan or a clean error.
#include <cstdint>
#include <string_view>

#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/pass.h"
#include "passes/pass_registry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::unique_ptr<kiln::Graph>> graph = kiln::parse_graph(text);
  if (!graph.ok() || !kiln::verify(**graph).ok()) return 0;
  const std::string printed = kiln::print_graph(**graph);
  absl::StatusOr<std::unique_ptr<kiln::Graph>> again = kiln::parse_graph(printed);
  if (!again.ok() || kiln::print_graph(**again) != printed) __builtin_trap();  // no round trip
  kiln::PassContext context;
  if (auto pass = kiln::create_pass("plan-memory"); pass.ok()) (void)(*pass)->run(**graph, context);
  return 0;
}
