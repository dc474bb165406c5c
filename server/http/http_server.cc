#include "server/http/http_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace yolohook::http {
namespace {

// Outcome of waiting for bytes.
enum class Io { kOk, kTimeout, kClosed, kStopped };

int PollMillis(absl::Time deadline) {
  absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  // Rounded up so that a poll never returns just before the deadline.
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1 << 30));
}

// Reads what is available into *buffer, waiting until `deadline`. `wake` is
// the server's shutdown pipe.
Io ReadSome(int fd, int wake, absl::Time deadline, std::string* buffer) {
  while (true) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {wake, POLLIN, 0}};
    int ready = poll(fds, 2, PollMillis(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      return Io::kClosed;
    }
    if (fds[1].revents != 0) return Io::kStopped;
    if (ready == 0) {
      if (absl::Now() >= deadline) return Io::kTimeout;
      continue;
    }
    char chunk[16384];
    ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
    if (n > 0) {
      buffer->append(chunk, static_cast<size_t>(n));
      return Io::kOk;
    }
    if (n == 0) return Io::kClosed;
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    return Io::kClosed;
  }
}

// Sends all of `data` before `deadline`. False when the peer has gone, the
// deadline passed or the server is shutting down.
bool SendAll(int fd, int wake, absl::Time deadline, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    pollfd fds[2] = {{fd, POLLOUT, 0}, {wake, POLLIN, 0}};
    int ready = poll(fds, 2, PollMillis(deadline));
    if (ready < 0 && errno != EINTR) return false;
    if (fds[1].revents != 0) return false;
    if (ready == 0 && absl::Now() >= deadline) return false;
  }
  return true;
}

// Reads and drops what the peer still sends (for a moment) so that closing
// does not reset the connection before it has read our answer.
void LingerClose(int fd, int wake) {
  shutdown(fd, SHUT_WR);
  absl::Time deadline = absl::Now() + absl::Seconds(1);
  std::string sink;
  while (sink.size() < (1 << 20)) {
    size_t before = sink.size();
    if (ReadSome(fd, wake, deadline, &sink) != Io::kOk) break;
    if (sink.size() == before) break;
  }
}

std::string PeerName(const sockaddr_storage& address) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (address.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&address);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
    return absl::StrCat(host, ":", port);
  }
  if (address.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&address);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
    return absl::StrCat("[", host, "]:", port);
  }
  return "?";
}

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool IsToken(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsTokenChar);
}

// Header values may not carry line breaks or other control characters.
std::string SafeHeaderValue(absl::string_view value) {
  std::string out(value);
  for (char& c : out) {
    if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
      c = ' ';
    }
  }
  return out;
}

// The status line and headers of a response.
std::string ResponseHead(int status, absl::string_view content_type,
                         const Headers& headers, const size_t* content_length,
                         bool keep_alive) {
  std::string head =
      absl::StrCat("HTTP/1.1 ", status, " ", StatusReason(status), "\r\n");
  if (!content_type.empty()) {
    absl::StrAppend(&head, "Content-Type: ", SafeHeaderValue(content_type),
                    "\r\n");
  }
  if (content_length != nullptr) {
    absl::StrAppend(&head, "Content-Length: ", *content_length, "\r\n");
  }
  absl::StrAppend(&head, "Connection: ", keep_alive ? "keep-alive" : "close",
                  "\r\n");
  for (const auto& [name, value] : headers) {
    if (!IsToken(name) || absl::EqualsIgnoreCase(name, "Content-Length") ||
        absl::EqualsIgnoreCase(name, "Connection") ||
        absl::EqualsIgnoreCase(name, "Content-Type") ||
        absl::EqualsIgnoreCase(name, "Transfer-Encoding")) {
      continue;
    }
    absl::StrAppend(&head, name, ": ", SafeHeaderValue(value), "\r\n");
  }
  head += "\r\n";
  return head;
}

// A request head that could not be accepted: the status and why.
struct HeadError {
  int status = 0;
  std::string message;
};

struct ParsedHead {
  Request request;
  size_t content_length = 0;
  bool keep_alive = true;
};

// Where the head ends (after its blank line) in `buffer`, or npos.
size_t HeadEnd(absl::string_view buffer) {
  size_t crlf = buffer.find("\r\n\r\n");
  size_t lf = buffer.find("\n\n");
  size_t end = absl::string_view::npos;
  if (crlf != absl::string_view::npos) end = crlf + 4;
  if (lf != absl::string_view::npos) end = std::min(end, lf + 2);
  return end;
}

// Parses a request head (request line and headers, without the blank line).
bool ParseHead(absl::string_view head, ParsedHead* parsed, HeadError* error) {
  std::vector<absl::string_view> lines = absl::StrSplit(head, '\n');
  for (auto& line : lines) absl::ConsumeSuffix(&line, "\r");
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (lines.empty()) {
    *error = {400, "empty request"};
    return false;
  }
  std::vector<absl::string_view> parts = absl::StrSplit(lines[0], ' ');
  if (parts.size() != 3 || !IsToken(parts[0]) || parts[1].empty()) {
    *error = {400, absl::StrCat("malformed request line \"",
                                absl::CHexEscape(lines[0].substr(0, 200)),
                                "\": expected METHOD /path HTTP/1.1")};
    return false;
  }
  absl::string_view version = parts[2];
  if (!absl::StartsWith(version, "HTTP/") || version.size() != 8 ||
      !absl::ascii_isdigit(version[5]) || version[6] != '.' ||
      !absl::ascii_isdigit(version[7])) {
    *error = {400, absl::StrCat("malformed HTTP version \"",
                                absl::CHexEscape(version.substr(0, 20)), "\"")};
    return false;
  }
  if (version[5] != '1') {
    *error = {505, absl::StrCat(version, " is not supported: use HTTP/1.1")};
    return false;
  }
  bool http10 = version == "HTTP/1.0";
  Request& request = parsed->request;
  request.method = std::string(parts[0]);
  absl::string_view target = parts[1];
  if (target[0] != '/') {
    *error = {400, "the request target must be a path starting with '/'"};
    return false;
  }
  size_t question = target.find('?');
  absl::string_view raw_path = target.substr(0, question);
  if (question != absl::string_view::npos) {
    request.query = std::string(target.substr(question + 1));
  }
  if (!PercentDecode(raw_path, false, &request.path) ||
      request.path.find('\0') != std::string::npos) {
    *error = {400, "malformed percent-encoding in the request path"};
    return false;
  }

  bool have_length = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    if (line[0] == ' ' || line[0] == '\t') {
      *error = {400, "folded header lines are not accepted"};
      return false;
    }
    size_t colon = line.find(':');
    absl::string_view name =
        colon == absl::string_view::npos ? line : line.substr(0, colon);
    if (colon == absl::string_view::npos || !IsToken(name)) {
      *error = {400, absl::StrCat("malformed header line \"",
                                  absl::CHexEscape(line.substr(0, 100)), "\"")};
      return false;
    }
    absl::string_view value = line.substr(colon + 1);
    value = absl::StripAsciiWhitespace(value);
    for (char c : value) {
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
        *error = {400, absl::StrCat("control character in header ", name)};
        return false;
      }
    }
    if (absl::EqualsIgnoreCase(name, "Content-Length")) {
      uint64_t length = 0;
      if (value.empty() || value.size() > 18 ||
          !std::all_of(value.begin(), value.end(),
                       [](char c) { return absl::ascii_isdigit(c); }) ||
          !absl::SimpleAtoi(value, &length) ||
          (have_length && length != parsed->content_length)) {
        *error = {400,
                  absl::StrCat("invalid Content-Length \"",
                               absl::CHexEscape(value.substr(0, 30)), "\"")};
        return false;
      }
      parsed->content_length = static_cast<size_t>(length);
      have_length = true;
    }
    if (absl::EqualsIgnoreCase(name, "Transfer-Encoding")) {
      *error = {411, absl::StrCat("Transfer-Encoding \"",
                                  absl::CHexEscape(value.substr(0, 30)),
                                  "\" is not supported: send the body with a "
                                  "Content-Length")};
      return false;
    }
    request.headers.emplace_back(std::string(name), std::string(value));
  }

  parsed->keep_alive = !http10;
  for (absl::string_view token :
       absl::StrSplit(request.Header("Connection"), ',')) {
    token = absl::StripAsciiWhitespace(token);
    if (absl::EqualsIgnoreCase(token, "close")) parsed->keep_alive = false;
    if (absl::EqualsIgnoreCase(token, "keep-alive") && http10) {
      parsed->keep_alive = true;
    }
  }
  return true;
}

}  // namespace

absl::string_view StatusReason(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "";
  }
}

bool PercentDecode(absl::string_view in, bool plus_is_space, std::string* out) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      int value = 0;
      if (i + 2 >= in.size()) return false;
      for (int k = 1; k <= 2; ++k) {
        char h = in[i + k];
        if (!absl::ascii_isxdigit(static_cast<unsigned char>(h))) return false;
        value = value * 16 + (absl::ascii_isdigit(h)
                                  ? h - '0'
                                  : absl::ascii_tolower(h) - 'a' + 10);
      }
      out->push_back(static_cast<char>(value));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out->push_back(' ');
    } else {
      out->push_back(c);
    }
  }
  return true;
}

std::string Request::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, name)) return value;
  }
  return "";
}

namespace {
// Finds parameter `name` in `query`; false when absent.
bool FindParam(absl::string_view query, absl::string_view name,
               std::string* value) {
  for (absl::string_view pair : absl::StrSplit(query, '&')) {
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string key;
    if (!PercentDecode(pair.substr(0, eq), true, &key) || key != name) {
      continue;
    }
    if (eq == absl::string_view::npos) {
      value->clear();
    } else if (!PercentDecode(pair.substr(eq + 1), true, value)) {
      value->clear();
    }
    return true;
  }
  return false;
}
}  // namespace

std::string Request::Param(absl::string_view name) const {
  std::string value;
  FindParam(query, name, &value);
  return value;
}

bool Request::HasParam(absl::string_view name) const {
  std::string value;
  return FindParam(query, name, &value);
}

struct Server::Route {
  std::string method;
  std::string path;
  bool prefix = false;
  // one of these two
  Handler handler;
  StreamHandler stream;
};

struct Server::Connection {
  absl::Mutex mu;
  int fd ABSL_GUARDED_BY(mu) = -1;  // -1 once closed by its thread
  std::string peer;
  std::thread thread;
  std::atomic<bool> done{false};
};

// The StreamWriter of one streaming response.
class Server::Writer : public StreamWriter {
 public:
  Writer(int fd, int wake, const std::atomic<bool>* stopping,
         absl::Duration write_timeout)
      : fd_(fd),
        wake_(wake),
        stopping_(stopping),
        write_timeout_(write_timeout) {}

  bool head_sent() const { return head_sent_; }

  bool WriteHead(int status, std::string content_type,
                 Headers headers) override {
    if (head_sent_ || closed()) return false;
    head_sent_ = true;
    if (status < 100 || status > 599) status = 500;
    return Send(ResponseHead(status, content_type, headers, nullptr, false));
  }

  bool Write(absl::string_view bytes) override {
    if (!head_sent_ && !WriteHead(200, "text/event-stream", {})) return false;
    if (closed()) return false;
    return Send(bytes);
  }

  bool closed() const override {
    if (stopping_->load() || gone_.load()) return true;
    // A readable socket is either the peer's close (recv returns 0) or bytes
    // an event-stream client should not send, which are dropped.
    while (true) {
      char chunk[4096];
      ssize_t n = recv(fd_, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (n > 0) continue;
      if (n == 0 ||
          (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        gone_ = true;
        return true;
      }
      return false;
    }
  }

  bool WaitClosed(absl::Duration timeout) override {
    absl::Time deadline = absl::Now() + timeout;
    while (!closed()) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_, POLLIN, 0}};
      int ready = poll(fds, 2, PollMillis(deadline));
      if (ready < 0 && errno != EINTR) return closed();
      if (ready == 0 && absl::Now() >= deadline) return closed();
    }
    return true;
  }

 private:
  bool Send(absl::string_view bytes) {
    if (!SendAll(fd_, wake_, absl::Now() + write_timeout_, bytes)) {
      gone_ = true;
      return false;
    }
    return true;
  }

  const int fd_;
  const int wake_;
  const std::atomic<bool>* stopping_;
  const absl::Duration write_timeout_;
  bool head_sent_ = false;
  mutable std::atomic<bool> gone_{false};
};

Server::Server(Options options) : options_(std::move(options)) {}

Server::~Server() { Shutdown(); }

void Server::Handle(std::string method, std::string path, Handler handler) {
  auto route = std::make_shared<Route>();
  route->handler = std::move(handler);
  AddRoute(std::move(method), std::move(path), std::move(route));
}

void Server::HandleStream(std::string method, std::string path,
                          StreamHandler handler) {
  auto route = std::make_shared<Route>();
  route->stream = std::move(handler);
  AddRoute(std::move(method), std::move(path), std::move(route));
}

void Server::AddRoute(std::string method, std::string path,
                      std::shared_ptr<Route> route) {
  route->method = std::move(method);
  route->prefix = absl::EndsWith(path, "/");
  route->path = std::move(path);
  absl::MutexLock lock(&mu_);
  routes_.erase(std::remove_if(routes_.begin(), routes_.end(),
                               [&](const std::shared_ptr<const Route>& r) {
                                 return r->method == route->method &&
                                        r->path == route->path;
                               }),
                routes_.end());
  routes_.push_back(std::move(route));
}

std::vector<std::pair<std::string, std::string>> Server::Routes() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::pair<std::string, std::string>> routes;
  routes.reserve(routes_.size());
  for (const auto& route : routes_)
    routes.emplace_back(route->method, route->path);
  return routes;
}

absl::Status Server::Start() {
  absl::MutexLock lock(&mu_);
  if (started_ || shut_down_) {
    return absl::FailedPreconditionError("the HTTP server was already started");
  }
  absl::string_view listen = options_.listen;
  std::string host;
  absl::string_view port_text;
  if (absl::StartsWith(listen, "[")) {
    size_t close = listen.find("]:");
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "HTTP listen address \"", listen, "\": expected [host]:port"));
    }
    host = std::string(listen.substr(1, close - 1));
    port_text = listen.substr(close + 2);
  } else {
    size_t colon = listen.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "HTTP listen address \"", listen, "\": expected host:port"));
    }
    host = std::string(listen.substr(0, colon));
    port_text = listen.substr(colon + 1);
  }
  int port = -1;
  if (port_text.empty() ||
      !std::all_of(port_text.begin(), port_text.end(),
                   [](char c) { return absl::ascii_isdigit(c); }) ||
      !absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP listen address \"", listen, "\": the port must be 0..65535"));
  }

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(),
                       &hints, &addresses);
  if (rc != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP listen address \"", listen, "\": ", gai_strerror(rc)));
  }
  std::string last_error = "no address";
  int fd = -1;
  for (addrinfo* a = addresses; a != nullptr; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, 128) == 0) {
      break;
    }
    last_error = std::strerror(errno);
    close(fd);
    fd = -1;
  }
  freeaddrinfo(addresses);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen for HTTP on ", listen, ": ", last_error));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &length);
  port_ = bound.ss_family == AF_INET6
              ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
              : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("cannot create a pipe: ", std::strerror(errno)));
  }
  listen_fd_ = fd;
  wake_read_ = pipe_fds[0];
  wake_write_ = pipe_fds[1];
  started_ = true;
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return absl::OkStatus();
}

void Server::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    if (!started_) return;
  }
  stopping_ = true;
  char byte = 'x';
  while (write(wake_write_, &byte, 1) < 0 && errno == EINTR) {
  }
  acceptor_.join();
  std::list<std::unique_ptr<Connection>> connections;
  {
    absl::MutexLock lock(&mu_);
    for (auto& connection : connections_) {
      absl::MutexLock connection_lock(&connection->mu);
      if (connection->fd >= 0) shutdown(connection->fd, SHUT_RDWR);
    }
    connections.swap(connections_);
  }
  for (auto& connection : connections) connection->thread.join();
  close(listen_fd_);
  close(wake_read_);
  close(wake_write_);
}

void Server::ReapLocked() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if ((*it)->done.load()) {
      (*it)->thread.join();
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void Server::AcceptLoop() {
  while (!stopping_.load()) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents != 0) break;
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    int fd = accept4(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      // Out of descriptors: wait a moment rather than spin.
      if (errno == EMFILE || errno == ENFILE) {
        pollfd wake = {wake_read_, POLLIN, 0};
        poll(&wake, 1, 50);
      }
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    absl::MutexLock lock(&mu_);
    ReapLocked();
    if (connections_.size() >= static_cast<size_t>(options_.max_connections)) {
      std::string body =
          absl::StrCat("too many connections (at most ",
                       options_.max_connections, "); try again later\n");
      size_t size = body.size();
      std::string response =
          ResponseHead(503, "text/plain; charset=utf-8", {{"Retry-After", "1"}},
                       &size, false) +
          body;
      send(fd, response.data(), response.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      char sink[4096];
      while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0) {
      }
      shutdown(fd, SHUT_WR);
      close(fd);
      continue;
    }
    auto connection = std::make_unique<Connection>();
    Connection* raw = connection.get();
    {
      absl::MutexLock connection_lock(&raw->mu);
      raw->fd = fd;
    }
    raw->peer = PeerName(address);
    connections_.push_back(std::move(connection));
    raw->thread = std::thread([this, raw] { Serve(raw); });
  }
}

std::shared_ptr<const Server::Route> Server::FindRoute(
    absl::string_view method, absl::string_view path, int* status,
    std::string* allow) const {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<const Route> best;
  std::vector<std::string> methods;
  auto better = [](const Route& a, const Route* b) {
    if (b == nullptr) return true;
    if (a.prefix != b->prefix) return !a.prefix;
    return a.path.size() > b->path.size();
  };
  for (const auto& route : routes_) {
    bool matches = route->prefix ? absl::StartsWith(path, route->path)
                                 : path == route->path;
    if (!matches) continue;
    methods.push_back(route->method);
    // HEAD is answered by plain GET handlers, not by streaming ones.
    if (route->method == "GET" && route->handler) methods.push_back("HEAD");
    bool method_ok =
        route->method == method ||
        (method == "HEAD" && route->method == "GET" && route->handler);
    if (method_ok && better(*route, best.get())) best = route;
  }
  if (best != nullptr) return best;
  if (methods.empty()) {
    *status = 404;
    return nullptr;
  }
  std::sort(methods.begin(), methods.end());
  methods.erase(std::unique(methods.begin(), methods.end()), methods.end());
  *status = 405;
  *allow = absl::StrJoin(methods, ", ");
  return nullptr;
}

void Server::Serve(Connection* connection) {
  int fd;
  {
    absl::MutexLock lock(&connection->mu);
    fd = connection->fd;
  }
  const int wake = wake_read_;
  auto write_deadline = [&] { return absl::Now() + options_.write_timeout; };
  // Answers with an error and ends the connection.
  auto fail = [&](int status, absl::string_view message) {
    std::string body = absl::StrCat(message, "\n");
    size_t size = body.size();
    SendAll(
        fd, wake, write_deadline(),
        ResponseHead(status, "text/plain; charset=utf-8", {}, &size, false) +
            body);
    LingerClose(fd, wake);
  };

  std::string buffer;
  bool keep_alive = true;
  while (keep_alive && !stopping_.load()) {
    // Blank lines before a request are allowed (RFC 9112 2.2).
    while (absl::StartsWith(buffer, "\r\n") || absl::StartsWith(buffer, "\n")) {
      buffer.erase(0, buffer[0] == '\r' ? 2 : 1);
    }
    if (buffer.empty() &&
        ReadSome(fd, wake, absl::Now() + options_.idle_timeout, &buffer) !=
            Io::kOk) {
      break;
    }
    const absl::Time deadline = absl::Now() + options_.read_timeout;
    size_t head_end;
    Io io = Io::kOk;
    while ((head_end = HeadEnd(buffer)) == std::string::npos &&
           buffer.size() <= options_.max_header_bytes) {
      io = ReadSome(fd, wake, deadline, &buffer);
      if (io != Io::kOk) break;
    }
    if (io == Io::kTimeout) {
      fail(408, "the request was not complete in time");
      break;
    }
    if (io != Io::kOk) break;
    if (head_end == std::string::npos || head_end > options_.max_header_bytes) {
      fail(431, absl::StrCat("the request line and headers exceed ",
                             options_.max_header_bytes, " bytes"));
      break;
    }
    ParsedHead parsed;
    HeadError error;
    if (!ParseHead(absl::string_view(buffer).substr(0, head_end), &parsed,
                   &error)) {
      fail(error.status, error.message);
      break;
    }
    if (parsed.content_length > options_.max_body_bytes) {
      fail(413,
           absl::StrCat("the request body (", parsed.content_length,
                        " bytes) exceeds ", options_.max_body_bytes, " bytes"));
      break;
    }
    while (buffer.size() - head_end < parsed.content_length) {
      io = ReadSome(fd, wake, deadline, &buffer);
      if (io != Io::kOk) break;
    }
    if (io == Io::kTimeout) {
      fail(408, "the request body was not complete in time");
      break;
    }
    if (io != Io::kOk) break;
    Request& request = parsed.request;
    request.body = buffer.substr(head_end, parsed.content_length);
    request.peer = connection->peer;
    buffer.erase(0, head_end + parsed.content_length);
    keep_alive = parsed.keep_alive;

    int status = 0;
    std::string allow;
    std::shared_ptr<const Route> route =
        FindRoute(request.method, request.path, &status, &allow);
    if (route == nullptr) {
      std::string body =
          status == 404
              ? absl::StrCat("no such path: ", request.path, "\n")
              : absl::StrCat("method ", request.method, " is not allowed on ",
                             request.path, " (allowed: ", allow, ")\n");
      size_t size = body.size();
      Headers headers;
      if (status == 405) headers.emplace_back("Allow", allow);
      if (!SendAll(fd, wake, write_deadline(),
                   ResponseHead(status, "text/plain; charset=utf-8", headers,
                                &size, keep_alive) +
                       (request.method == "HEAD" ? "" : body))) {
        break;
      }
      continue;
    }

    if (route->stream) {
      Writer writer(fd, wake, &stopping_, options_.write_timeout);
      try {
        route->stream(request, writer);
      } catch (const std::exception& e) {
        if (!writer.head_sent()) {
          writer.WriteHead(500, "text/plain; charset=utf-8", {});
          writer.Write(absl::StrCat("internal error: ", e.what(), "\n"));
        }
      } catch (...) {
        if (!writer.head_sent()) {
          writer.WriteHead(500, "text/plain; charset=utf-8", {});
          writer.Write("internal error\n");
        }
      }
      if (!writer.head_sent()) writer.WriteHead(204, "", {});
      LingerClose(fd, wake);
      break;
    }

    Response response;
    try {
      response = route->handler(request);
    } catch (const std::exception& e) {
      response = Response();
      response.status = 500;
      response.body = absl::StrCat("internal error: ", e.what(), "\n");
    } catch (...) {
      response = Response();
      response.status = 500;
      response.body = "internal error\n";
    }
    if (response.status < 100 || response.status > 599) response.status = 500;
    size_t size = response.body.size();
    std::string out = ResponseHead(response.status, response.content_type,
                                   response.headers, &size, keep_alive);
    if (request.method != "HEAD") out += response.body;
    if (!SendAll(fd, wake, write_deadline(), out)) break;
    if (!keep_alive) LingerClose(fd, wake);
  }

  absl::MutexLock lock(&connection->mu);
  close(connection->fd);
  connection->fd = -1;
  connection->done = true;
}

}  // namespace yolohook::http
