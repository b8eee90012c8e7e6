#!/bin/sh
# Put mailrouter behind an existing Postfix. Every line ADDS to main.cf/master.cf: it keeps
# the transport_maps, relay_domains and restrictions already there, and changes no global
# retry or size setting. It stops before changing anything when Postfix relays other domains
# without relay_recipient_maps (step 0 says why and what to do). Run once as root
# (docs/install.md step 5), then `postfix reload`.
# Postfix tools honour MAIL_CONFIG (another instance's config directory).
#
#   MAILROUTER   the mailrouter program        (/opt/mailrouter/bin/mailrouter)
#   CONFIG       mailrouter's config           (/etc/mailrouter/config.yaml)
#   MAPS         where the tables are written  (/var/lib/mailrouter/postfix: not under
#                /etc/postfix, where `postfix check` and every `postfix start` warn "not owned
#                by root" for each file once the mailrouter user owns them, postfix_maps.on_reload)
#   TO_MR        mailrouter's SMTP listener    (listen.smtp of CONFIG, e.g. [127.0.0.1]:2525)
#   RETURN_PORT  mail from mailrouter back to Postfix (10027, outbox.relay, delivery.smtp.port)
set -eu
MAILROUTER=${MAILROUTER:-/opt/mailrouter/bin/mailrouter}
CONFIG=${CONFIG:-/etc/mailrouter/config.yaml}
MAPS=${MAPS:-/var/lib/mailrouter/postfix}
RETURN_PORT=${RETURN_PORT:-10027}

# 0. relay_recipient_maps covers every domain of relay_domains. While it is empty, Postfix
#    takes any recipient of the domains it already relays; once our table is in it, Postfix
#    refuses each of their addresses no table lists ("550 5.1.1 ... User unknown in relay
#    recipient table"): mail for those domains would bounce. So stop first, change nothing,
#    and say how to give them a table of their own ('@domain OK' keeps taking every address).
#    (Only a relay_domains set in main.cf: its default is $mydestination or nothing. Its
#    default written out, `${{$compatibility_level} <level {2} ? {$mydestination} : {}}`,
#    as `postconf -e "relay_domains = $(postconf -h relay_domains) ..."` does, is no domain.)
if [ -z "$(postconf -h relay_recipient_maps)" ]; then
    others=""
    relay=$(postconf -nh relay_domains)
    default=$(postconf -dh relay_domains)
    [ -z "$default" ] || relay=${relay#"$default"}
    set -f      # the default's ? and {} are no file names
    for d in $(printf '%s' "$relay" | tr ',\t\n' '   '); do
        case "$d" in
            '$mydestination'|'${mydestination}'|'$(mydestination)'|"hash:$MAPS/domains") ;;
            *) others="$others $d" ;;
        esac
    done
    set +f
    if [ -n "$others" ]; then
        etc=$(postconf -h config_directory)
        keys=""
        tables=""
        for d in $others; do
            case "$d" in
                *:*) tables="$tables $d" ;;
                *) keys="$keys@$d OK\n" ;;
            esac
        done
        {
            echo "relay_domains already lists:$others; relay_recipient_maps is empty, so Postfix takes"
            echo "any recipient of those domains. With mailrouter's table in relay_recipient_maps it would"
            echo "refuse each of their addresses that no table lists (550 5.1.1 User unknown in relay"
            echo "recipient table). Nothing was changed. Give those domains a table of their own first"
            echo "(one line per address, or '@domain OK' to keep taking every address), then run this"
            echo "script again:"
            [ -z "$keys" ] || printf '%s\n' "  printf '$keys' > $etc/relay_recipients"
            [ -z "$tables" ] || echo "  # in $etc/relay_recipients, a line '@DOMAIN OK' for each domain of:$tables"
            echo "  postmap hash:$etc/relay_recipients"
            echo "  postconf -e 'relay_recipient_maps = hash:$etc/relay_recipients'"
        } >&2
        exit 1
    fi
fi

# 1. The tables from the address book: our domains to mailrouter, unknown addresses
#    refused by Postfix at RCPT (no backscatter), moved addresses answered 551 5.1.6.
#    (Its advice to add them to main.cf is what the lines below do: not shown.)
#    (to listen.smtp of CONFIG unless TO_MR says otherwise). What it says on stderr is
#    shown after the check below, which says more on what that check finds.
said=$(mktemp)
trap 'rm -f "$said"' EXIT
failed() { rc=$?; cat "$said" >&2; exit "$rc"; }
if [ -n "${TO_MR:-}" ]; then
    $MAILROUTER postfix -c "$CONFIG" --dir "$MAPS" --nexthop "mailrouter:$TO_MR" --postmap >/dev/null 2>"$said" || failed
else
    $MAILROUTER postfix -c "$CONFIG" --dir "$MAPS" --transport mailrouter --postmap >/dev/null 2>"$said" || failed
fi
#    Our domains must be relay domains to Postfix. One it delivers itself (mydestination: the
#    Debian installer puts the mail name there) or hosts (virtual_*_domains) keeps that
#    class whatever relay_domains and transport_maps say: Postfix refused every address of
#    it ("550 5.1.1 User unknown in local recipient table"). Stop before main.cf is changed.
listed() {  # listed DOMAIN PARAMETER: is DOMAIN in that domain list of Postfix (names, tables)?
    for e in $(postconf -xh "$2" | tr ',\t\n' '   '); do
        case "$e" in
            *:*) postmap -q "$1" "$e" >/dev/null 2>&1 && return 0 ;;
            *) [ "$(printf '%s' "$e" | tr 'A-Z' 'a-z')" = "$1" ] && return 0 ;;
        esac
    done
    return 1
}
for d in $(grep -v '^#' "$MAPS/domains" | cut -f1); do
    for p in mydestination virtual_mailbox_domains virtual_alias_domains; do
        listed "$d" "$p" || continue
        {
            echo "$d is in Postfix's $p ($(postconf -h "$p")): Postfix keeps serving it itself"
            echo "and would refuse every address of it that it does not host, whatever relay_domains and"
            echo "transport_maps say. Nothing was changed in main.cf or master.cf."
            if [ "$p" = mydestination ]; then
                echo "If Postfix holds no mailboxes of $d (the Debian installer lists the mail name"
                echo "there), take it out of mydestination and run this script again:"
                echo "  postconf -e 'mydestination = <the list above without $d>'"
                echo "If it does, the domain is shared: see README \"Postfix in front\" (mailrouter postfix --mode virtual)."
            else
                echo "The domain is shared with mailboxes Postfix hosts: see README \"Postfix in front\""
                echo "(mailrouter postfix --mode virtual; not for a domain in virtual_alias_domains)."
            fi
        } >&2
        exit 1
    done
done
cat "$said" >&2

# 2. A transport of its own, so its limits apply to mail for mailrouter only:
#    at most limits.max_recipients (100) RCPTs per transaction. It is Postfix's smtp client,
#    so it would take main.cf's settings for mail to the Internet: none of those below is
#    for mailrouter, which offers no STARTTLS (smtp_tls_security_level = encrypt deferred
#    all its mail), must get our addresses as they are (smtp_generic_maps rewrote them),
#    and should see the connection come from loopback (smtp_bind_address, a multi-homed MX:
#    from a public address it is greeted after limits.greet_delay and counted against
#    limits.max_connections_per_client).
postconf -M "mailrouter/unix=mailrouter unix - - n - - smtp"
for o in syslog_name=postfix/to-mailrouter smtp_tls_security_level=none \
         smtp_bind_address= smtp_bind_address6= smtp_generic_maps= \
         smtp_header_checks= smtp_mime_header_checks= smtp_nested_header_checks= \
         smtp_body_checks= smtp_sasl_auth_enable=no; do
    postconf -P "mailrouter/unix/$o"
done
postconf -e "mailrouter_destination_recipient_limit = 100"

# 3. The tables added to main.cf.
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
# First in the list, not last: a list ending in `permit` (many guides write it so), or a
# permit_mynetworks before it, would never reach it, and a moved address would be taken,
# refused by mailrouter and bounced. It answers only for the moved addresses it lists.
# (An earlier version of this script appended it: moved to the front when found later.)
first() {
    list=$(postconf -h "$1" | tr ',\t\n' '   ' | tr -s ' ')
    list=${list# }
    list=${list% }
    case "$list" in
        "$2"|"$2 "*) ;;
        *) rest=$(printf ' %s ' "$list" | sed "s| $2 | |")
           rest=${rest# }
           rest=${rest% }
           postconf -e "$1 = $2${rest:+, $rest}" ;;
    esac
}
first smtpd_recipient_restrictions "check_recipient_access hash:$MAPS/recipient_access"
# +detail: Postfix strips it as mailrouter does (left alone if you already have one):
[ -n "$(postconf -h recipient_delimiter)" ] || postconf -e "recipient_delimiter = +"

# 4. Mail mailrouter hands back (autoreplies, reminders, smtp: mailboxes): a loopback-only
#    smtpd without content filters; config.yaml delivery.smtp: {host: 127.0.0.1, port: 10027}.
#    No HELO or sender checks of main.cf there: mailrouter says EHLO with its hostname,
#    by default this host's name, often not fully qualified (reject_non_fqdn_helo_hostname
#    refused every DSN, autoreply and forward 504 5.5.2); only loopback clients get in.
#    No size limit there, and a cleanup of its own that has none either (cleanup, not smtpd,
#    enforces message_size_limit): a message Postfix took at just under message_size_limit
#    comes back from mailrouter with its own headers on top, and was refused here "552 5.3.4
#    message file too big" and bounced. Its size was checked where it came in (Postfix's
#    smtpd, then limits.max_message_size).
postconf -M "mailrouter-cleanup/unix=mailrouter-cleanup unix n - n - 0 cleanup"
postconf -P "mailrouter-cleanup/unix/message_size_limit=0"
postconf -M "127.0.0.1:$RETURN_PORT/inet=127.0.0.1:$RETURN_PORT inet n - n - 20 smtpd"
for o in syslog_name=postfix/from-mailrouter content_filter= \
         cleanup_service_name=mailrouter-cleanup message_size_limit=0 \
         receive_override_options=no_header_body_checks,no_unknown_recipient_checks \
         smtpd_client_restrictions=permit_mynetworks,reject \
         smtpd_helo_restrictions= smtpd_sender_restrictions= \
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
