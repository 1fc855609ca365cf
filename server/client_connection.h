// ClientConnection: whether the client a handler is answering is still there.
//
// cpp-httplib 0.11 (Debian 12's) gives a non-streaming handler no way to know: Request carries no
// socket, and nothing is written to the client before the handler returns, so no write can fail.
// The handler's connection is, however, the one open socket with the request's remote and local
// addresses and ports (a TCP connection's identity); that socket stays open (owned by the
// handler's thread) until the handler and its content provider return, so peeking at it is safe.
#pragma once

#include <optional>
#include <string>

namespace kiln {

class ClientConnection {
 public:
  /// The socket of the TCP connection from `remote_addr`:`remote_port` to
  /// `local_addr`:`local_port` (numeric, as httplib gives them); nullopt when no open socket of
  /// this process matches.
  static std::optional<ClientConnection> find(const std::string& remote_addr, int remote_port,
                                              const std::string& local_addr, int local_port);

  /// True when the peer closed (end of stream) or reset the connection. Bytes waiting to be read
  /// (a pipelined request) mean it is still open. Never blocks. A client that half-closes its
  /// side while it waits for the answer counts as gone, as in other HTTP servers.
  bool closed() const;

  int fd() const { return fd_; }

 private:
  explicit ClientConnection(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace kiln
