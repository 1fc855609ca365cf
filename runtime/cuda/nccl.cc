// The dlopen'd NCCL (see nccl.h). nccl.h is used for its types only: nothing here links against
// libnccl, and without nccl.h (no toolkit or wheel at build time) Nccl::load reports Unavailable.
#include "runtime/cuda/nccl.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

#if __has_include(<nccl.h>)
#include <nccl.h>
#define KILN_HAVE_NCCL_H 1
#endif

namespace kiln {

#ifdef KILN_HAVE_NCCL_H

/// The NCCL entry points kiln uses.
struct NcclApi {
  void* lib = nullptr;
  ncclResult_t (*get_version)(int*) = nullptr;
  const char* (*get_error_string)(ncclResult_t) = nullptr;
  ncclResult_t (*get_unique_id)(ncclUniqueId*) = nullptr;
  ncclResult_t (*comm_init_rank)(ncclComm_t*, int, ncclUniqueId, int) = nullptr;
  ncclResult_t (*comm_init_all)(ncclComm_t*, int, const int*) = nullptr;
  ncclResult_t (*comm_destroy)(ncclComm_t) = nullptr;
  ncclResult_t (*all_reduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                             cudaStream_t) = nullptr;
  ncclResult_t (*all_gather)(const void*, void*, size_t, ncclDataType_t, ncclComm_t,
                             cudaStream_t) = nullptr;
  ncclResult_t (*group_start)() = nullptr;
  ncclResult_t (*group_end)() = nullptr;
};

absl::StatusOr<int> nccl_data_type(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return static_cast<int>(ncclBfloat16);
    case DType::kF16: return static_cast<int>(ncclFloat16);
    case DType::kF32: return static_cast<int>(ncclFloat32);
    case DType::kI32: return static_cast<int>(ncclInt32);
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("NCCL collectives of ", dtype_name(dtype), " are not supported"));
}

absl::StatusOr<std::shared_ptr<const Nccl>> Nccl::load(const std::string& library) {
  // Before NCCL reads its environment (at the first communicator): NVLink multicast stays off.
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/1);
  void* lib = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    return absl::UnavailableError(absl::StrCat(
        "NCCL is not available (", library, " not found: ", why ? why : "dlopen failed",
        "): tensor-parallel plans need it on the GPU; install the PyPI wheel nvidia-nccl-cu13 and "
        "put its lib folder on LD_LIBRARY_PATH, or run the plan with --device cpu"));
  }
  auto api = std::make_shared<NcclApi>();
  api->lib = lib;  // never dlclose'd: NCCL keeps proxy threads alive
  const char* missing = nullptr;
  auto need = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
    if (fn == nullptr && missing == nullptr) missing = symbol;
  };
  need(api->get_version, "ncclGetVersion");
  need(api->get_error_string, "ncclGetErrorString");
  need(api->get_unique_id, "ncclGetUniqueId");
  need(api->comm_init_rank, "ncclCommInitRank");
  need(api->comm_init_all, "ncclCommInitAll");
  need(api->comm_destroy, "ncclCommDestroy");
  need(api->all_reduce, "ncclAllReduce");
  need(api->all_gather, "ncclAllGather");
  need(api->group_start, "ncclGroupStart");
  need(api->group_end, "ncclGroupEnd");
  if (missing != nullptr) {
    return absl::UnavailableError(
        absl::StrCat(library, " lacks ", missing, ": an NCCL older than 2.x? (kiln needs 2.12+)"));
  }
  return std::shared_ptr<const Nccl>(new Nccl(std::move(api)));
}

std::string Nccl::version() const {
  int v = 0;
  if (api_->get_version(&v) != ncclSuccess) return "unknown";
  // NCCL_VERSION(X, Y, Z) = X * 10000 + Y * 100 + Z since 2.9.
  return absl::StrCat(v / 10000, ".", v / 100 % 100, ".", v % 100);
}

std::string Nccl::error_string(int result) const {
  const char* s = api_->get_error_string(static_cast<ncclResult_t>(result));
  return s != nullptr ? s : "unknown NCCL error";
}

absl::Status Nccl::check(int result, const char* call) const {
  if (result == ncclSuccess) return absl::OkStatus();
  const std::string msg = absl::StrCat(call, " failed: ", error_string(result), " (NCCL ",
                                       version(), ", code ", result, ")");
  // No GPU / driver is a system error; a bad argument is the caller's.
  return result == ncclInvalidArgument || result == ncclInvalidUsage
             ? absl::InvalidArgumentError(msg)
             : absl::UnavailableError(msg);
}

absl::StatusOr<NcclUniqueId> Nccl::unique_id() const {
  ncclUniqueId id;
  if (absl::Status s = check(api_->get_unique_id(&id), "ncclGetUniqueId"); !s.ok()) return s;
  NcclUniqueId out;
  static_assert(sizeof(id) == sizeof(out.bytes));
  std::memcpy(out.bytes.data(), &id, sizeof(id));
  return out;
}

absl::StatusOr<NcclComm> Nccl::init_rank(const NcclUniqueId& id, int rank, int ranks) const {
  if (ranks < 1 || rank < 0 || rank >= ranks) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank, " of ", ranks));
  }
  ncclUniqueId raw;
  std::memcpy(&raw, id.bytes.data(), sizeof(raw));
  ncclComm_t comm = nullptr;
  if (absl::Status s = check(api_->comm_init_rank(&comm, ranks, raw, rank), "ncclCommInitRank");
      !s.ok()) {
    return s;
  }
  return NcclComm(api_, comm, rank, ranks);
}

absl::StatusOr<std::vector<NcclComm>> Nccl::init_all(const std::vector<int>& devices) const {
  if (devices.empty()) return absl::InvalidArgumentError("NCCL communicator of no devices");
  std::vector<ncclComm_t> comms(devices.size(), nullptr);
  absl::Status s =
      check(api_->comm_init_all(comms.data(), static_cast<int>(devices.size()), devices.data()),
            "ncclCommInitAll");
  if (!s.ok()) return s;
  std::vector<NcclComm> out;
  for (size_t i = 0; i < comms.size(); ++i) {
    out.push_back(NcclComm(api_, comms[i], static_cast<int>(i), static_cast<int>(comms.size())));
  }
  return out;
}

absl::Status Nccl::all_reduce_sum(const NcclComm& comm, DevicePtr send, DevicePtr recv,
                                  size_t count, DType dtype, void* stream) const {
  absl::StatusOr<int> type = nccl_data_type(dtype);
  if (!type.ok()) return type.status();
  return check(
      api_->all_reduce(reinterpret_cast<const void*>(send), reinterpret_cast<void*>(recv), count,
                       static_cast<ncclDataType_t>(*type), ncclSum,
                       static_cast<ncclComm_t>(comm.handle()), static_cast<cudaStream_t>(stream)),
      "ncclAllReduce");
}

absl::Status Nccl::all_gather(const NcclComm& comm, DevicePtr send, DevicePtr recv, size_t count,
                              DType dtype, void* stream) const {
  absl::StatusOr<int> type = nccl_data_type(dtype);
  if (!type.ok()) return type.status();
  return check(
      api_->all_gather(reinterpret_cast<const void*>(send), reinterpret_cast<void*>(recv), count,
                       static_cast<ncclDataType_t>(*type), static_cast<ncclComm_t>(comm.handle()),
                       static_cast<cudaStream_t>(stream)),
      "ncclAllGather");
}

absl::Status Nccl::group_start() const { return check(api_->group_start(), "ncclGroupStart"); }
absl::Status Nccl::group_end() const { return check(api_->group_end(), "ncclGroupEnd"); }

NcclComm& NcclComm::operator=(NcclComm&& o) noexcept {
  if (this != &o) {
    if (comm_ != nullptr) api_->comm_destroy(static_cast<ncclComm_t>(comm_));
    api_ = std::move(o.api_);
    comm_ = o.comm_;
    rank_ = o.rank_;
    ranks_ = o.ranks_;
    o.comm_ = nullptr;
  }
  return *this;
}

NcclComm::~NcclComm() {
  if (comm_ != nullptr) api_->comm_destroy(static_cast<ncclComm_t>(comm_));
}

#else  // no nccl.h at build time

struct NcclApi {};

absl::StatusOr<int> nccl_data_type(DType dtype) {
  return absl::UnavailableError("this kiln was built without nccl.h");
}
absl::StatusOr<std::shared_ptr<const Nccl>> Nccl::load(const std::string& library) {
  return absl::UnavailableError(
      absl::StrCat("NCCL is not available: this kiln was built without nccl.h (the PyPI wheel "
                   "nvidia-nccl-cu13 carries it), so it cannot load ",
                   library));
}
std::string Nccl::version() const { return "unknown"; }
std::string Nccl::error_string(int) const { return "NCCL unavailable"; }
absl::Status Nccl::check(int, const char* call) const {
  return absl::UnavailableError(absl::StrCat(call, ": NCCL unavailable"));
}
absl::StatusOr<NcclUniqueId> Nccl::unique_id() const { return check(1, "ncclGetUniqueId"); }
absl::StatusOr<NcclComm> Nccl::init_rank(const NcclUniqueId&, int, int) const {
  return check(1, "ncclCommInitRank");
}
absl::StatusOr<std::vector<NcclComm>> Nccl::init_all(const std::vector<int>&) const {
  return check(1, "ncclCommInitAll");
}
absl::Status Nccl::all_reduce_sum(const NcclComm&, DevicePtr, DevicePtr, size_t, DType,
                                  void*) const {
  return check(1, "ncclAllReduce");
}
absl::Status Nccl::all_gather(const NcclComm&, DevicePtr, DevicePtr, size_t, DType, void*) const {
  return check(1, "ncclAllGather");
}
absl::Status Nccl::group_start() const { return check(1, "ncclGroupStart"); }
absl::Status Nccl::group_end() const { return check(1, "ncclGroupEnd"); }
NcclComm& NcclComm::operator=(NcclComm&& o) noexcept {
  comm_ = o.comm_;
  o.comm_ = nullptr;
  return *this;
}
NcclComm::~NcclComm() = default;

#endif

}  // namespace kiln
