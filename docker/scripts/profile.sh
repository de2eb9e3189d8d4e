# /etc/profile.d/skyrl-stack.sh, sourced by login shells. SkyPilot runs its
# setup and job commands through `bash -l`, and Debian's /etc/profile resets
# PATH, so the image's ENV PATH alone is not enough there.

# The one Python environment (Ray, SkyRL, smoke suite) first on PATH.
case ":${PATH}:" in
  *:/opt/skyrl/venv/bin:*) ;;
  *) export PATH="/opt/skyrl/venv/bin:${PATH}" ;;
esac

# The image ships without sshd host keys (shared keys would let containers
# impersonate each other, and their random bytes would break reproducible
# builds). SkyPilot starts sshd after a `bash -lc` step, so each container
# makes its own key here, once: one Ed25519 key, made in milliseconds.
# `ssh-keygen -A` would also make RSA (3072-bit: about a second of prime
# search) and ECDSA keys that neither sshd nor SkyPilot's OpenSSH client
# needs (every OpenSSH since 6.5 speaks Ed25519; sshd skips absent default
# HostKey files and serves the keys it has).
if [ "$(id -u)" = 0 ] && [ ! -e /etc/ssh/ssh_host_ed25519_key ]; then
  ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key >/dev/null 2>&1 || true
fi
