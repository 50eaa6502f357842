# VMSnap installation.  make && make install  (as root), or for packagers:
#   make install DESTDIR=/tmp/pkg PREFIX=/usr
# `make uninstall` removes exactly what `make install` put there (configuration files only
# when they are still as shipped, so an administrator's edits survive).

PREFIX      ?= /usr
SYSCONFDIR  ?= /etc
BINDIR      ?= $(PREFIX)/bin
LIBEXECDIR  ?= $(PREFIX)/libexec
DATADIR     ?= $(PREFIX)/share
UNITDIR     ?= $(PREFIX)/lib/systemd/system
DBUSDIR     ?= $(DATADIR)/dbus-1
POLKITDIR   ?= $(DATADIR)/polkit-1
MANDIR      ?= $(DATADIR)/man
COCKPITDIR  ?= $(DATADIR)/cockpit/vmsnap
CARGO       ?= cargo
INSTALL     ?= install

# PROFILE=debug installs the debug build (the tests use it to avoid a second build).
PROFILE ?= release
RELEASE := target/$(PROFILE)
ASSETS  := target/assets-$(PROFILE)
CARGO_PROFILE := $(if $(filter release,$(PROFILE)),--release,)

# destination : source : mode   (paths below DESTDIR)
FILES := \
	$(BINDIR)/vmsnapctl:$(RELEASE)/vmsnapctl:755 \
	$(LIBEXECDIR)/vmsnapd:$(RELEASE)/vmsnapd:755 \
	$(LIBEXECDIR)/vmsnap-guestfs:$(RELEASE)/vmsnap-guestfs:755 \
	$(PREFIX)/lib/sysusers.d/vmsnap.conf:systemd/vmsnap.sysusers:644 \
	$(UNITDIR)/vmsnapd.service:$(ASSETS)/vmsnapd.service:644 \
	$(UNITDIR)/vmsnap-backup.service:$(ASSETS)/vmsnap-backup.service:644 \
	$(UNITDIR)/vmsnap-backup.timer:systemd/vmsnap-backup.timer:644 \
	$(DBUSDIR)/system.d/org.vmsnap.VMSnap1.conf:systemd/org.vmsnap.VMSnap1.conf:644 \
	$(DBUSDIR)/system-services/org.vmsnap.VMSnap1.service:$(ASSETS)/org.vmsnap.VMSnap1.service:644 \
	$(DBUSDIR)/interfaces/org.vmsnap.VMSnap1.Manager.xml:dbus/interfaces/org.vmsnap.VMSnap1.Manager.xml:644 \
	$(DBUSDIR)/interfaces/org.vmsnap.VMSnap1.Job.xml:dbus/interfaces/org.vmsnap.VMSnap1.Job.xml:644 \
	$(DBUSDIR)/interfaces/org.vmsnap.VMSnap1.Files.xml:dbus/interfaces/org.vmsnap.VMSnap1.Files.xml:644 \
	$(POLKITDIR)/actions/org.vmsnap.policy:polkit/org.vmsnap.policy:644 \
	$(POLKITDIR)/rules.d/50-org.vmsnap.rules:polkit/50-org.vmsnap.rules:644 \
	$(MANDIR)/man1/vmsnapctl.1:$(ASSETS)/vmsnapctl.1:644 \
	$(MANDIR)/man8/vmsnapd.8:$(ASSETS)/vmsnapd.8:644 \
	$(DATADIR)/bash-completion/completions/vmsnapctl:$(ASSETS)/vmsnapctl.bash:644 \
	$(DATADIR)/zsh/vendor-completions/_vmsnapctl:$(ASSETS)/_vmsnapctl:644 \
	$(DATADIR)/fish/vendor_completions.d/vmsnapctl.fish:$(ASSETS)/vmsnapctl.fish:644 \
	$(DATADIR)/vmsnap/prometheus/vmsnap.rules.yml:prometheus/vmsnap.rules.yml:644

CONFIGS := \
	$(SYSCONFDIR)/vmsnap/vmsnapd.toml:systemd/vmsnapd.toml \
	$(SYSCONFDIR)/vmsnap/backup.env:systemd/backup.env

# The Cockpit page (cockpit/build: its sources plus PatternFly's stylesheet and the files that
# stylesheet loads), installed as a whole directory.
COCKPIT_PAGE := $(ASSETS)/cockpit

.PHONY: all build assets cockpit-page install uninstall list

all: build assets cockpit-page

build:
	$(CARGO) build $(CARGO_PROFILE) --locked --bin vmsnapd --bin vmsnapctl --bin vmsnap-guestfs

# Man pages and completions come from the clap definitions; unit and activation files get the
# real binary paths.
assets: build
	mkdir -p $(ASSETS)
	$(RELEASE)/vmsnapctl --generate man > $(ASSETS)/vmsnapctl.1
	$(RELEASE)/vmsnapd --generate man > $(ASSETS)/vmsnapd.8
	$(RELEASE)/vmsnapctl --generate complete-bash > $(ASSETS)/vmsnapctl.bash
	$(RELEASE)/vmsnapctl --generate complete-zsh > $(ASSETS)/_vmsnapctl
	$(RELEASE)/vmsnapctl --generate complete-fish > $(ASSETS)/vmsnapctl.fish
	for f in vmsnapd.service vmsnap-backup.service org.vmsnap.VMSnap1.service; do \
		sed -e 's|/usr/libexec/vmsnapd|$(LIBEXECDIR)/vmsnapd|g' \
		    -e 's|/usr/bin/vmsnapctl|$(BINDIR)/vmsnapctl|g' \
		    -e 's|/etc/vmsnap/|$(SYSCONFDIR)/vmsnap/|g' systemd/$$f > $(ASSETS)/$$f; \
	done

cockpit-page:
	@cockpit/build $(COCKPIT_PAGE) >&2

install: assets cockpit-page
	@set -e; for entry in $(FILES); do \
		dst=$${entry%%:*}; rest=$${entry#*:}; src=$${rest%%:*}; mode=$${rest##*:}; \
		$(INSTALL) -D -m $$mode "$$src" "$(DESTDIR)$$dst"; echo "installed $$dst"; \
	done
	@set -e; for entry in $(CONFIGS); do \
		dst=$${entry%%:*}; src=$${entry#*:}; \
		if [ -e "$(DESTDIR)$$dst" ]; then echo "kept $$dst"; \
		else $(INSTALL) -D -m 644 "$$src" "$(DESTDIR)$$dst"; echo "installed $$dst"; fi; \
	done
	@set -e; cd $(COCKPIT_PAGE) && for f in $$(find . -type f | sort); do \
		$(INSTALL) -D -m 644 "$$f" "$(DESTDIR)$(COCKPITDIR)/$${f#./}"; echo "installed $(COCKPITDIR)/$${f#./}"; \
	done
	@# The file reader's user, on this system (a package's postinst does it for packages).
	@if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then \
		systemd-sysusers "$(PREFIX)/lib/sysusers.d/vmsnap.conf" && echo "created the user vmsnap-files"; fi

uninstall:
	@for entry in $(FILES); do dst=$${entry%%:*}; rm -f "$(DESTDIR)$$dst" && echo "removed $$dst"; done
	@for entry in $(CONFIGS); do \
		dst=$${entry%%:*}; src=$${entry#*:}; \
		if cmp -s "$$src" "$(DESTDIR)$$dst"; then rm -f "$(DESTDIR)$$dst"; echo "removed $$dst"; \
		elif [ -e "$(DESTDIR)$$dst" ]; then echo "kept $$dst (edited)"; fi; \
	done
	@rmdir "$(DESTDIR)$(SYSCONFDIR)/vmsnap" 2>/dev/null || true
	@rm -rf -- "$(DESTDIR)$(COCKPITDIR)" && echo "removed $(COCKPITDIR)"

# The installed paths, one per line (the tests compare an install against it).
list: cockpit-page
	@for entry in $(FILES) $(CONFIGS); do echo "$${entry%%:*}"; done
	@cd $(COCKPIT_PAGE) && find . -type f | sort | sed 's|^\./|$(COCKPITDIR)/|'
