# reflector@example.test: answer every message with an auto-reply to its
# envelope sender whose subject keeps the original one (and so a probe token).
require ["vacation", "vacation-seconds", "variables"];
set "subject" "";
if header :matches "subject" "*" {
  set "subject" "${1}";
}
# :seconds 0 = no "already answered this sender" memory: every probe is answered
vacation :seconds 0 :subject "Auto: ${subject}"
  "This is the mailstack reflector: an automatic reply to your message.";
