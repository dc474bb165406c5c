// A raw HTTP/1.1 client for tests of the HTTP endpoints: it sends exactly the
// bytes a test gives it (malformed requests included) and parses responses.
#ifndef YOLOHOOK_TESTS_TESTING_HTTP_CLIENT_H_
#define YOLOHOOK_TESTS_TESTING_HTTP_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace yolohook::testing {

struct HttpResponse {
  // 0 when no response could be read
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  std::string Header(absl::string_view name) const {
    for (const auto& [key, value] : headers) {
      if (absl::EqualsIgnoreCase(key, name)) return value;
    }
    return "";
  }
};

// One TCP connection to 127.0.0.1:port. Reads give up after 30 s so that a
// broken server fails the test instead of hanging it.
class HttpConnection {
 public:
  explicit HttpConnection(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
        0) {
      close(fd_);
      fd_ = -1;
      return;
    }
    timeval timeout{30, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  ~HttpConnection() { Close(); }
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  bool connected() const { return fd_ >= 0; }

  bool Send(absl::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads one response. A response without Content-Length (a stream) reads
  // until the server closes. `head_only` for answers to HEAD.
  HttpResponse Read(bool head_only = false) {
    HttpResponse response;
    size_t end;
    while ((end = buffer_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill()) return response;
    }
    std::vector<std::string> lines =
        absl::StrSplit(buffer_.substr(0, end), "\r\n");
    buffer_.erase(0, end + 4);
    std::vector<std::string> status_line =
        absl::StrSplit(lines[0], absl::MaxSplits(' ', 2));
    if (status_line.size() < 2 ||
        !absl::SimpleAtoi(status_line[1], &response.status)) {
      return response;
    }
    for (size_t i = 1; i < lines.size(); ++i) {
      size_t colon = lines[i].find(':');
      if (colon == std::string::npos) continue;
      response.headers.emplace_back(
          lines[i].substr(0, colon),
          std::string(absl::StripAsciiWhitespace(
              absl::string_view(lines[i]).substr(colon + 1))));
    }
    if (head_only) return response;
    std::string length_text = response.Header("Content-Length");
    if (length_text.empty()) {
      while (Fill()) {
      }
      response.body = std::move(buffer_);
      buffer_.clear();
      return response;
    }
    size_t length = 0;
    if (!absl::SimpleAtoi(length_text, &length)) return response;
    while (buffer_.size() < length) {
      if (!Fill()) break;
    }
    response.body = buffer_.substr(0, length);
    buffer_.erase(0, std::min(length, buffer_.size()));
    return response;
  }

  // Reads until `text` has arrived (e.g. a streamed event); false when the
  // connection ended first. The bytes read so far stay in buffer().
  bool ReadUntil(absl::string_view text) {
    while (!absl::StrContains(buffer_, text)) {
      if (!Fill()) return false;
    }
    return true;
  }
  const std::string& buffer() const { return buffer_; }

  // True once the server has closed the connection (reads until it does).
  bool ReadUntilClosed() {
    while (Fill()) {
    }
    return closed_;
  }

  void Close() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  bool Fill() {
    if (fd_ < 0) return false;
    char chunk[16384];
    ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n <= 0) {
      closed_ = n == 0;
      return false;
    }
    buffer_.append(chunk, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buffer_;
  bool closed_ = false;
};

// GET http://127.0.0.1:port{path} on a fresh connection.
inline HttpResponse HttpGet(int port, const std::string& path) {
  HttpConnection connection(port);
  connection.Send("GET " + path +
                  " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  return connection.Read();
}

}  // namespace yolohook::testing

#endif  // YOLOHOOK_TESTS_TESTING_HTTP_CLIENT_H_
