// The server's sockets: listeners opened for a host and a port, and descriptors a host hands
// over. HOST is parsed as an address literal only: no name lookup, so a static build needs no NSS.
#pragma once
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

// Opens the listeners for `host` (see Server::listen()): one, or for "localhost" 127.0.0.1 and,
// where the kernel has IPv6, ::1 on the same port. Returns false with *error saying what and where.
bool open_listeners(const std::string& host, uint16_t port, std::vector<int>* out, std::string* error);
// The port a socket is bound to, 0 if unknown.
uint16_t bound_port(int fd);
// The address a socket is bound to, as text ("" if unknown).
std::string bound_address(int fd);
// Makes a descriptor handed over by a host ours: non-blocking and close-on-exec, after checking
// that it is a listening stream socket (`listening`) or a connected one (its peer's address in
// *peer). False with *error naming the descriptor and the reason.
bool take_over_socket(int fd, bool listening, sockaddr_storage* peer, std::string* error);
