// NCCL, loaded at run time with dlopen("libnccl.so.2") and never linked, as the driver is
// (runtime/cuda/driver.h): every kiln binary starts without it, and only a tensor-parallel plan on
// several GPUs needs it. It is the transport of the plan's collectives (PlanCollective): kiln
// sends nothing between GPUs itself. Every ncclResult_t becomes an absl::Status naming the call
// and NCCL's error string. nccl.h (the PyPI wheel nvidia-nccl-cu13 carries it and
// libnccl.so.2) supplies types only, inside nccl.cc; this header exposes none of them.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ir/dtype.h"
#include "runtime/cuda/driver.h"  // DevicePtr

namespace kiln {

struct NcclApi;  // the dlsym'd function table (nccl.cc)

/// The token every rank of one communicator shares (ncclUniqueId): made by one rank, handed to
/// the others (in one process: copied to each GPU's thread).
struct NcclUniqueId {
  std::array<char, 128> bytes{};
};

/// One rank's communicator (ncclComm_t), destroyed with this object.
class NcclComm {
 public:
  NcclComm() = default;
  NcclComm(NcclComm&& o) noexcept { *this = std::move(o); }
  NcclComm& operator=(NcclComm&& o) noexcept;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;
  ~NcclComm();

  void* handle() const { return comm_; }
  int rank() const { return rank_; }
  int ranks() const { return ranks_; }

 private:
  friend class Nccl;
  NcclComm(std::shared_ptr<const NcclApi> api, void* comm, int rank, int ranks)
      : api_(std::move(api)), comm_(comm), rank_(rank), ranks_(ranks) {}
  std::shared_ptr<const NcclApi> api_;
  void* comm_ = nullptr;
  int rank_ = 0, ranks_ = 0;
};

/// The loaded library. Thread-safe (NCCL's calls are, per communicator); the collectives are
/// enqueued on a CUDA stream (the step's, so a captured decode graph replays them).
class Nccl {
 public:
  /// Loads `library` (default libnccl.so.2). Unavailable, naming the library and where it comes
  /// from, when it is absent, lacks a symbol kiln calls, or this binary was built without nccl.h.
  /// Sets NCCL_NVLS_ENABLE=0 first (overwriting any other value): NVLink SHARP multicast stays
  /// off, as the machines kiln's tensor parallelism targets require; the all-reduces go over
  /// NVLink's ordinary ring / tree paths.
  static absl::StatusOr<std::shared_ptr<const Nccl>> load(
      const std::string& library = "libnccl.so.2");

  /// The library's version, "2.28.9".
  std::string version() const;
  /// NCCL's text for a result code (ncclGetErrorString).
  std::string error_string(int result) const;

  /// A fresh id for one communicator (ncclGetUniqueId).
  absl::StatusOr<NcclUniqueId> unique_id() const;
  /// Rank `rank` of `ranks` joins the communicator of `id` (ncclCommInitRank); call on the
  /// thread whose CUDA context is the rank's GPU, every rank at once (it blocks until all join).
  absl::StatusOr<NcclComm> init_rank(const NcclUniqueId& id, int rank, int ranks) const;
  /// One communicator per device ordinal, rank i on devices[i] (ncclCommInitAll).
  absl::StatusOr<std::vector<NcclComm>> init_all(const std::vector<int>& devices) const;

  /// Sum of `count` elements of `dtype` over the ranks, on `stream` (a CUstream); in place when
  /// send == recv.
  absl::Status all_reduce_sum(const NcclComm& comm, DevicePtr send, DevicePtr recv, size_t count,
                              DType dtype, void* stream) const;
  /// Each rank's `count` elements, concatenated rank-major into recv (ranks * count).
  absl::Status all_gather(const NcclComm& comm, DevicePtr send, DevicePtr recv, size_t count,
                          DType dtype, void* stream) const;
  /// ncclGroupStart / ncclGroupEnd: several ranks' calls from one thread as one operation.
  absl::Status group_start() const;
  absl::Status group_end() const;

 private:
  explicit Nccl(std::shared_ptr<const NcclApi> api) : api_(std::move(api)) {}
  absl::Status check(int result, const char* call) const;
  std::shared_ptr<const NcclApi> api_;
};

/// The NCCL data type of `dtype` (bf16, f16, f32, i32), or InvalidArgument naming it.
absl::StatusOr<int> nccl_data_type(DType dtype);

}  // namespace kiln
