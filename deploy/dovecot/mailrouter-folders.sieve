# mailrouter-folders.sieve: files a copy from mailrouter into the folder its rules chose.
# Run as sieve_before for the Dovecot users that are mailrouter mailboxes with
# `sieve_folders: true` (see deploy/dovecot/mailrouter.conf, docs/install.md).
#
# mailrouter adds, on top of the message, one line per such mailbox:
#   X-Mailrouter-Folder: finance@mail.internal =?utf-8?b?0KTQuNC90LDQvdGB0Ys=?=
# (the RCPT address, then the folder, RFC 2047-encoded when it is not ASCII; INBOX
# when the rules chose no folder). Sieve compares decoded header values (RFC 5228
# 2.7.2), so "${2}" is the folder in UTF-8, which Dovecot stores as «Финансы».
# Only a line naming this very recipient counts, and ours is the first one, so a
# sender's forged X-Mailrouter-Folder below it is never used. mailrouter writes its line
# only for mailboxes with `sieve_folders: true`: run this for their users only, or a
# sender's line, then the first, picks the folder.
require ["fileinto", "mailbox", "variables", "envelope"];

if envelope :matches "to" "*" {
  set "rcpt" "${1}";
}
if header :matches "X-Mailrouter-Folder" "${rcpt} *" {
  fileinto :create "${1}";
  stop;
}
