// ClientConnection: a handler's own socket, found by its peer address, and a non-blocking peek.
#include "server/client_connection.h"

#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>

namespace kiln {
namespace {

// The port of an AF_INET / AF_INET6 address; -1 for any other family.
int port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return -1;
}

// True when `a` is `host` written numerically, as httplib writes addresses (getnameinfo).
bool is_host(const sockaddr_storage& a, socklen_t len, const std::string& host) {
  char text[NI_MAXHOST];
  return getnameinfo(reinterpret_cast<const sockaddr*>(&a), len, text, sizeof(text), nullptr, 0,
                     NI_NUMERICHOST) == 0 &&
         host == text;
}

}  // namespace

std::optional<ClientConnection> ClientConnection::find(const std::string& remote_addr,
                                                       int remote_port,
                                                       const std::string& local_addr,
                                                       int local_port) {
  if (remote_port <= 0 || local_port <= 0) return std::nullopt;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return std::nullopt;
  std::optional<ClientConnection> found;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    // Cheap port checks first, then the addresses.
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof(local), peer_len = sizeof(peer);
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
        port_of(local) != local_port) {
      continue;
    }
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0 ||
        port_of(peer) != remote_port) {
      continue;
    }
    if (!is_host(peer, peer_len, remote_addr) || !is_host(local, local_len, local_addr)) continue;
    found = ClientConnection(static_cast<int>(fd));
    break;
  }
  closedir(dir);
  return found;
}

bool ClientConnection::closed() const {
  char byte;
  const ssize_t n = recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;  // data waiting: the client is there
  if (n == 0) return true;  // end of stream: the client closed its side
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;  // reset, or worse
}

}  // namespace kiln
