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
# makes its own keys here, once.
if [ "$(id -u)" = 0 ] && ! ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1; then
  ssh-keygen -A >/dev/null 2>&1 || true
fi
