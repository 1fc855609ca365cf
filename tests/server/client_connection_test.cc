// ClientConnection: finds the accepted socket of a loopback connection by its addresses (and no
// other), says open while the client is there (also with bytes waiting), and gone after the
// client closes or resets.
#include "server/client_connection.h"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace kiln {
namespace {

int port_of(int fd, bool peer) {
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  if (peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&a), &len)
           : getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len)) {
    return -1;
  }
  return ntohs(a.sin_port);
}

// A loopback listener, one client connected to it, and the server's end of that connection.
struct Loopback {
  int listener = -1, client = -1, server = -1;
  Loopback() {
    listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(listener, 4), 0);
    a.sin_port = htons(static_cast<uint16_t>(port_of(listener, false)));
    client = socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_EQ(connect(client, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    server = accept(listener, nullptr, nullptr);
    EXPECT_GE(server, 0);
  }
  ~Loopback() {
    for (int fd : {listener, client, server}) {
      if (fd >= 0) close(fd);
    }
  }
  std::optional<ClientConnection> find() const {
    return ClientConnection::find("127.0.0.1", port_of(client, false), "127.0.0.1",
                                  port_of(listener, false));
  }
};

// closed() may take a moment to see what the peer did: the kernel delivers it asynchronously.
bool becomes_closed(const ClientConnection& c) {
  for (int i = 0; i < 100; ++i) {
    if (c.closed()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(ClientConnection, FindsTheServersEndOfTheConnectionOnly) {
  Loopback lo;
  std::optional<ClientConnection> c = lo.find();
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->fd(), lo.server);
  const int client_port = port_of(lo.client, false), server_port = port_of(lo.listener, false);
  EXPECT_FALSE(ClientConnection::find("127.0.0.1", client_port + 1, "127.0.0.1", server_port));
  EXPECT_FALSE(ClientConnection::find("127.0.0.2", client_port, "127.0.0.1", server_port));
  EXPECT_FALSE(ClientConnection::find("127.0.0.1", client_port, "127.0.0.1", server_port + 1));
  EXPECT_FALSE(ClientConnection::find("127.0.0.1", -1, "127.0.0.1", server_port));
}

TEST(ClientConnection, OpenWithBytesWaitingClosedAfterTheClientCloses) {
  Loopback lo;
  std::optional<ClientConnection> c = lo.find();
  ASSERT_TRUE(c.has_value());
  EXPECT_FALSE(c->closed());
  ASSERT_EQ(write(lo.client, "GET / HTTP/1.1\r\n", 16), 16);  // a pipelined request
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(c->closed());
  char buf[16];
  ASSERT_EQ(read(lo.server, buf, sizeof(buf)), 16);  // peeking consumed nothing
  close(lo.client);
  lo.client = -1;
  EXPECT_TRUE(becomes_closed(*c));
}

TEST(ClientConnection, ClosedAfterAReset) {
  Loopback lo;
  std::optional<ClientConnection> c = lo.find();
  ASSERT_TRUE(c.has_value());
  linger hard{1, 0};  // close() sends RST
  ASSERT_EQ(setsockopt(lo.client, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)), 0);
  close(lo.client);
  lo.client = -1;
  EXPECT_TRUE(becomes_closed(*c));
}

}  // namespace
}  // namespace kiln
