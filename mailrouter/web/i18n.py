"""The web view's words in English and Russian, and the choice between them.

The language is the `lang` cookie when the person chose one (the switch in every page's
header), else the first of ours in the browser's Accept-Language by its q-value, else
English. A key missing from a language falls back to English, then to the key itself,
so a forgotten translation shows as text, never as an error.
"""

from __future__ import annotations

__all__ = ["LANGUAGES", "pick_language", "translate"]

LANGUAGES = ("en", "ru")

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "title": "mailrouter", "search": "Search", "report": "Report", "signout": "Sign out",
        "signin": "Sign in", "person": "Person (key or address)", "password": "Password",
        "bad_login": "Unknown person or wrong password.",
        "sender": "Sender (address or domain)", "rcpt": "Recipient", "words": "Subject words",
        "since": "From date", "until": "To date", "tag": "Tag", "status": "Status",
        "mailbox": "Mailbox", "owner": "Owner", "rule_owner": "Owner by the rule", "find": "Find", "any": "any",
        "received": "Received", "from": "From", "subject": "Subject", "decisions": "Decisions",
        "next_page": "Next page", "prev_page": "Previous page",
        "messages_of": "Messages {first}–{last} of {n}",
        "nothing": "Nothing found.", "scan_stopped": "The search stopped after {n} messages; "
        "narrow it with dates.", "shown": "{n} shown",
        "message": "Message", "message_id": "Message-ID", "envelope": "Envelope sender",
        "recipients": "Envelope recipients", "size": "Size", "ruleset": "Rule set",
        "attempts": "Received {n} times (retries)", "attachments": "Attachments",
        "attachments_none": "not recorded in the registry", "decision": "Decision",
        "action": "Action", "reply": "Reply", "folder": "Folder", "tags": "Tags",
        "priority": "Priority", "sla": "SLA", "path": "Alias path", "why": "Why",
        "rules": "Rules that matched", "deliveries": "Copies", "target": "Target",
        "state": "State", "detail": "Detail", "counterparty": "Counterparty",
        "history_of": "History of {who}", "who": "Address or domain",
        "not_found": "No such page, or nothing you may see here.",
        "forbidden": "Refused: the form was stale or came from elsewhere. Reload the page and try again.",
        "unavailable": "The registry is unavailable; try again in a minute.",
        "st_open": "open", "st_answered": "answered", "st_waiting": "waiting", "st_closed": "closed",
        "st_delivered": "delivered", "st_partial": "partial", "st_deferred": "deferred",
        "st_rejected": "rejected", "st_unanswered": "stored, unanswered",
        "bad_input": "Cannot read this: {what}", "conflict": "Not done: {what}",
        "refused_already_owner": "{who} already owns request #{number}",
        "refused_already_closed": "request #{number} is already closed",
        "refused_not_closed": "request #{number} is not closed (it is {status})",
        "refused_note_empty": "a note needs some text",
        "refused_note_long": "a note is at most {most} characters, this one has {got}",
        "bad_date": "a date must look like 2026-03-31",
        "date_range": "a date must be 9999-12-30 or earlier",
        "day": "Day", "messages": "Messages", "thread_messages": "Messages", "trouble": "Deferred or refused",
        "per_day": "Messages per day", "per_mailbox": "Per mailbox", "per_owner": "Per owner",
        "team_of": "{team} (team)",
        "csv": "Download CSV", "none": "(none)", "signed_in_as": "Signed in as {who}",
        "admin": "administrator", "language": "Language", "period": "Period",
        "show": "Show", "no_rights": "You may see the mail of: {what}",
        "everything": "everything", "own_mail": "your own mail",
        "covering": "the requests of those away whom you cover as their deputy:",
        "board": "Board", "open": "Not closed", "awaiting": "Awaiting an answer",
        "overdue": "Overdue", "nobody": "(nobody)", "awaiting_list": "Awaiting an answer",
        "all_requests": "All requests", "requests_of": "Requests",
        "requests_newest": "The newest {n} requests are shown.", "opened": "Opened", "sla_left": "SLA time left",
        "overdue_by": "overdue by {h} business h", "hours_left": "{h} business h left",
        "team": "team", "rule": "rule", "due": "First response due",
        "first_response": "First response",
        "next_due": "Next answer due", "reopened": "reopened", "new_owner": "New owner",
        "choose": "(choose)", "reassign": "Reassign",
        "close": "Close", "reopen": "Reopen", "note": "Internal note", "add_note": "Add note",
        "dir_in": "incoming", "dir_out": "our reply", "history": "History", "when": "When",
        "what": "What", "who_did": "Who", "request": "Request",
        "ev_opened": "opened", "ev_joined": "follow-up", "ev_owner": "owner", "ev_reply": "reply",
        "ev_status": "status", "ev_note": "note", "ev_join_refused": "join refused",
        "ev_reminder": "reminder", "ev_escalation": "escalation", "ev_remind": "reminder sent",
        "ev_escalate": "escalation sent",
        "throttled": "Too many failed sign-ins: try again in {minutes} min.",
        "response_title": "Requests: first response and SLA",
        "response_note": "{answered} answered; first response median {median} h, 90th percentile "
        "{p90} h (business hours); within SLA: {share}.",
        "requests": "Requests", "answered": "Answered", "median_h": "Median, h", "p90_h": "p90, h",
        "kept": "Within SLA", "missed": "Missed", "share_kept": "Share within SLA",
        "median_box": "Median first response per mailbox, business hours",
        "median_owner": "Median first response per owner, business hours",
        "share_box": "Share within SLA per mailbox", "csv_response": "Download CSV (response)",
    },
    "ru": {
        "title": "mailrouter", "search": "Поиск", "report": "Отчёт", "signout": "Выйти",
        "signin": "Войти", "person": "Сотрудник (ключ или адрес)", "password": "Пароль",
        "bad_login": "Неизвестный сотрудник или неверный пароль.",
        "sender": "Отправитель (адрес или домен)", "rcpt": "Получатель", "words": "Слова темы",
        "since": "С даты", "until": "По дату", "tag": "Метка", "status": "Статус",
        "mailbox": "Ящик", "owner": "Ответственный", "rule_owner": "Ответственный по правилу",
        "find": "Найти", "any": "любой",
        "received": "Получено", "from": "От", "subject": "Тема", "decisions": "Решения",
        "next_page": "Следующая страница", "prev_page": "Предыдущая страница",
        "messages_of": "Письма {first}–{last} из {n}",
        "nothing": "Ничего не найдено.", "scan_stopped": "Поиск остановлен после {n} писем; "
        "уточните даты.", "shown": "показано: {n}",
        "message": "Письмо", "message_id": "Message-ID", "envelope": "Отправитель конверта",
        "recipients": "Получатели конверта", "size": "Размер", "ruleset": "Набор правил",
        "attempts": "Получено {n} раз (повторы)", "attachments": "Вложения",
        "attachments_none": "в реестре не записаны", "decision": "Решение",
        "action": "Действие", "reply": "Ответ", "folder": "Папка", "tags": "Метки",
        "priority": "Приоритет", "sla": "SLA", "path": "Путь по псевдонимам", "why": "Почему",
        "rules": "Сработавшие правила", "deliveries": "Копии", "target": "Куда",
        "state": "Состояние", "detail": "Подробности", "counterparty": "Корреспондент",
        "history_of": "История: {who}", "who": "Адрес или домен",
        "not_found": "Такой страницы нет, или вам её видеть не положено.",
        "forbidden": "Отказано: форма устарела или пришла не отсюда. Обновите страницу и повторите.",
        "unavailable": "Реестр недоступен; повторите через минуту.",
        "st_open": "открыт", "st_answered": "отвечен", "st_waiting": "ждёт клиента",
        "st_closed": "закрыт", "st_delivered": "доставлено", "st_partial": "доставлено частично",
        "st_deferred": "отложено", "st_rejected": "отклонено",
        "st_unanswered": "сохранено, без ответа отправителю",
        "bad_input": "Не удалось прочитать: {what}", "conflict": "Не сделано: {what}",
        "refused_already_owner": "{who} уже ведёт обращение №{number}",
        "refused_already_closed": "обращение №{number} уже закрыто",
        "refused_not_closed": "обращение №{number} не закрыто (его статус: {status})",
        "refused_note_empty": "в заметке нет текста",
        "refused_note_long": "заметка может быть не длиннее {most} знаков, в этой {got}",
        "bad_date": "дата пишется так: 2026-03-31",
        "date_range": "дата должна быть не позже 9999-12-30",
        "day": "День", "messages": "Писем", "thread_messages": "Письма", "trouble": "Отложено или отклонено",
        "per_day": "Писем в день", "per_mailbox": "По ящикам", "per_owner": "По ответственным",
        "team_of": "{team} (команда)",
        "csv": "Скачать CSV", "none": "(нет)", "signed_in_as": "Вы вошли как {who}",
        "admin": "администратор", "language": "Язык", "period": "Период",
        "show": "Показать", "no_rights": "Вам видна почта: {what}",
        "everything": "вся", "own_mail": "ваша собственная",
        "covering": "обращения отсутствующих, которых вы замещаете:",
        "board": "Доска", "open": "Не закрыто", "awaiting": "Ждут ответа",
        "overdue": "Просрочено", "nobody": "(никто)", "awaiting_list": "Ждут ответа",
        "all_requests": "Все обращения", "requests_of": "Обращения",
        "requests_newest": "Показаны {n} последних обращений.", "opened": "Открыто", "sla_left": "До срока SLA",
        "overdue_by": "просрочено на {h} раб. ч", "hours_left": "осталось {h} раб. ч",
        "team": "группа", "rule": "правило", "due": "Срок первого ответа",
        "first_response": "Первый ответ",
        "next_due": "Срок следующего ответа", "reopened": "открыто снова", "new_owner": "Новый ответственный",
        "choose": "(выберите)",
        "reassign": "Передать", "close": "Закрыть", "reopen": "Открыть снова",
        "note": "Внутренняя заметка", "add_note": "Добавить заметку",
        "dir_in": "входящее", "dir_out": "наш ответ", "history": "История", "when": "Когда",
        "what": "Что", "who_did": "Кто", "request": "Обращение",
        "ev_opened": "открыто", "ev_joined": "продолжение", "ev_owner": "ответственный",
        "ev_reply": "ответ", "ev_status": "статус", "ev_note": "заметка",
        "ev_join_refused": "присоединение отклонено", "ev_reminder": "напоминание",
        "ev_escalation": "эскалация", "ev_remind": "напоминание отправлено",
        "ev_escalate": "эскалация отправлена",
        "throttled": "Слишком много неудачных попыток входа: повторите через {minutes} мин.",
        "response_title": "Обращения: первый ответ и SLA",
        "response_note": "Отвечено: {answered}; первый ответ: медиана {median} ч, 90-й процентиль "
        "{p90} ч (рабочие часы); в срок SLA: {share}.",
        "requests": "Обращений", "answered": "Отвечено", "median_h": "Медиана, ч",
        "p90_h": "p90, ч", "kept": "В срок", "missed": "Просрочено", "share_kept": "Доля в срок",
        "median_box": "Медиана первого ответа по ящикам, рабочие часы",
        "median_owner": "Медиана первого ответа по ответственным, рабочие часы",
        "share_box": "Доля ответов в срок по ящикам", "csv_response": "Скачать CSV (ответы)",
    },
}


def pick_language(cookie: str | None, accept: str | None) -> str:
    """The language to answer in: the cookie's choice, else Accept-Language, else English."""
    if cookie in LANGUAGES:
        return cookie
    best, best_q = "en", 0.0
    for position, part in enumerate((accept or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        lang = tag.strip().lower().split("-")[0]
        q -= position * 1e-6          # equal weights: the earlier one wins
        if lang in LANGUAGES and q > best_q:
            best, best_q = lang, q
    return best


def translate(lang: str, key: str, **values: object) -> str:
    text = _WORDS.get(lang, {}).get(key) or _WORDS["en"].get(key) or key
    return text.format(**values) if values else text
