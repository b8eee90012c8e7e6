#!/bin/sh
# Put mailrouter behind an existing Postfix. Every line ADDS to main.cf/master.cf: it keeps
# the transport_maps, relay_domains and restrictions already there, and changes no global
# retry or size setting. Run once as root (docs/install.md step 5), then `postfix reload`.
# Postfix tools honour MAIL_CONFIG (another instance's config directory).
#
#   MAILROUTER   the mailrouter program        (/opt/mailrouter/bin/mailrouter)
#   CONFIG       mailrouter's config           (/etc/mailrouter/config.yaml)
#   MAPS         where the tables are written  (/etc/postfix/mailrouter)
#   TO_MR        mailrouter's SMTP listener    (listen.smtp of CONFIG, e.g. [127.0.0.1]:2525)
#   RETURN_PORT  mail from mailrouter back to Postfix (10027, outbox.relay, delivery.smtp.port)
set -eu
MAILROUTER=${MAILROUTER:-/opt/mailrouter/bin/mailrouter}
CONFIG=${CONFIG:-/etc/mailrouter/config.yaml}
MAPS=${MAPS:-/etc/postfix/mailrouter}
RETURN_PORT=${RETURN_PORT:-10027}

# 1. A transport of its own, so its limits apply to mail for mailrouter only:
#    at most limits.max_recipients (100) RCPTs per transaction.
postconf -M "mailrouter/unix=mailrouter unix - - n - - smtp"
postconf -P "mailrouter/unix/syslog_name=postfix/to-mailrouter"
postconf -e "mailrouter_destination_recipient_limit = 100"

# 2. The tables from the address book: our domains to mailrouter, unknown addresses
#    refused by Postfix at RCPT (no backscatter), moved addresses answered 551 5.1.6.
#    (Its advice to add them to main.cf is what the lines below do: not shown.)
# (to listen.smtp of CONFIG unless TO_MR says otherwise)
if [ -n "${TO_MR:-}" ]; then
    $MAILROUTER postfix -c "$CONFIG" --dir "$MAPS" --nexthop "mailrouter:$TO_MR" --postmap >/dev/null
else
    $MAILROUTER postfix -c "$CONFIG" --dir "$MAPS" --transport mailrouter --postmap >/dev/null
fi
echo "tables written in $MAPS and added to main.cf"
# Each table is added once: running the script again (after a failed `postfix check`, or
# to move MAPS) leaves main.cf as one run did.
add() {
    now=$(postconf -h "$1")
    case " $(printf '%s' "$now" | tr ',\t\n' '   ') " in
        *" $2 "*) ;;
        *) postconf -e "$1 = ${now:+$now }$2" ;;
    esac
}
add transport_maps "hash:$MAPS/transport"
add relay_domains "hash:$MAPS/domains"
add relay_recipient_maps "hash:$MAPS/relay_recipients"
add smtpd_recipient_restrictions "check_recipient_access hash:$MAPS/recipient_access"
# +detail: Postfix strips it as mailrouter does (left alone if you already have one):
[ -n "$(postconf -h recipient_delimiter)" ] || postconf -e "recipient_delimiter = +"

# 3. Mail mailrouter hands back (autoreplies, reminders, smtp: mailboxes): a loopback-only
#    smtpd without content filters; config.yaml delivery.smtp: {host: 127.0.0.1, port: 10027}.
postconf -M "127.0.0.1:$RETURN_PORT/inet=127.0.0.1:$RETURN_PORT inet n - n - 20 smtpd"
for o in syslog_name=postfix/from-mailrouter content_filter= \
         receive_override_options=no_header_body_checks,no_unknown_recipient_checks \
         smtpd_client_restrictions=permit_mynetworks,reject \
         smtpd_recipient_restrictions=permit_mynetworks,reject \
         smtpd_relay_restrictions=permit_mynetworks,reject \
         mynetworks=127.0.0.0/8 smtpd_tls_security_level=none; do
    postconf -P "127.0.0.1:$RETURN_PORT/inet/$o"
done

# `postfix check` says why it failed only on a terminal; elsewhere (a provisioning tool,
# ssh without -t) only in the mail log, so say where.
if ! postfix check </dev/null; then
    echo "postfix check failed: the lines above are in main.cf/master.cf. Postfix logged why" \
         "to $(postconf -h maillog_file | grep . || echo 'syslog (journalctl -t postfix/postfix-script, /var/log/mail.log)');" \
         "or run 'postfix check' in a terminal. Fix it, then run this script again." >&2
    exit 1
fi
echo "done: run 'postfix reload'. message_size_limit is $(postconf -h message_size_limit);" \
     "keep mailrouter's limits.max_message_size at least that."
