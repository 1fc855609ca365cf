// Histogram: a Prometheus-style cumulative histogram over fixed bucket bounds (seconds), written
// in the text exposition format.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

class Histogram {
 public:
  /// `bounds` ascending; an implicit +Inf bucket follows them.
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  /// `# HELP`, `# TYPE` and the `_bucket`, `_sum`, `_count` lines for metric `name`.
  std::string text(const std::string& name, const std::string& help) const;
  int64_t count() const { return count_; }

  /// Bounds for request latencies: 1 ms to 60 s, roughly x2.5 apart.
  static std::vector<double> latency_bounds();

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // [bounds + 1], not cumulative
  double sum_ = 0;
  int64_t count_ = 0;
};

}  // namespace kiln
