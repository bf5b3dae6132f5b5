;; textstats: counts the bytes, characters, words and lines of a text. A WASI command.
;;
;; stdin:  a JSON object with a string field "text", e.g. {"text": "two words\n"}
;; stdout: {"bytes":10,"chars":10,"words":2,"lines":1}
;;
;;   bytes  length of the text in UTF-8
;;   chars  Unicode code points (a \uD83D\uDE00 surrogate pair is one)
;;   words  runs of characters other than ASCII whitespace (space, \t, \n, \v, \f, \r)
;;   lines  newlines, plus one when the text does not end with a newline
;;
;; JSON escapes (\n, \", \uXXXX, ...) are decoded before counting; other fields are skipped.
;; Bad input: a message on stderr and exit status 2. Input larger than the memory the tool is
;; granted (wasm.memoryMb): exit status 3.
;;
;; It imports only WASI's fd_read, fd_write and proc_exit, and needs no grant. AgentFlow
;; compiles it from this text when the ToolPolicy is loaded (no binary is committed).
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))

  ;; 0..16 iovec, 16..20 byte count; 64..512 the output line; 1024.. messages; 65536.. the input.
  (memory (export "memory") 2)
  (data (i32.const 1024) "{\"bytes\":\00")
  (data (i32.const 1040) ",\"chars\":\00")
  (data (i32.const 1056) ",\"words\":\00")
  (data (i32.const 1072) ",\"lines\":\00")
  (data (i32.const 1088) "}\0a\00")
  (data (i32.const 1100) "textstats: input is not a JSON object\0a\00")
  (data (i32.const 1200) "textstats: the input has no \"text\" field\0a\00")
  (data (i32.const 1300) "textstats: \"text\" must be a string\0a\00")
  (data (i32.const 1400) "textstats: malformed JSON input\0a\00")
  (data (i32.const 1500) "textstats: cannot read stdin\0a\00")
  (data (i32.const 1600) "textstats: the input does not fit in the memory granted (wasm.memoryMb)\0a\00")

  (global $pos (mut i32) (i32.const 0))   ;; parse position
  (global $end (mut i32) (i32.const 0))   ;; end of the input
  (global $out (mut i32) (i32.const 64))  ;; end of the output line
  (global $bytes (mut i32) (i32.const 0))
  (global $chars (mut i32) (i32.const 0))
  (global $words (mut i32) (i32.const 0))
  (global $lines (mut i32) (i32.const 0))
  (global $in_word (mut i32) (i32.const 0))
  (global $last (mut i32) (i32.const -1)) ;; the last code point counted

  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  (func $write (param $fd i32) (param $p i32) (param $n i32)
    (i32.store (i32.const 0) (local.get $p))
    (i32.store (i32.const 4) (local.get $n))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 16))))

  (func $fail (param $msg i32) (param $status i32)
    (call $write (i32.const 2) (local.get $msg) (call $strlen (local.get $msg)))
    (call $proc_exit (local.get $status))
    unreachable)

  ;; --- input -----------------------------------------------------------------------------
  (func $read_all
    (local $n i32)
    (global.set $end (i32.const 65536))
    (loop $more
      ;; keep at least 64 KiB free after the end; grow one page at a time
      (if (i32.gt_u (i32.add (global.get $end) (i32.const 65536))
                    (i32.mul (memory.size) (i32.const 65536)))
        (then
          (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
            (then (call $fail (i32.const 1600) (i32.const 3))))))
      (i32.store (i32.const 0) (global.get $end))
      (i32.store (i32.const 4) (i32.const 65536))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16))
        (then (call $fail (i32.const 1500) (i32.const 2))))
      (local.set $n (i32.load (i32.const 16)))
      (global.set $end (i32.add (global.get $end) (local.get $n)))
      (br_if $more (local.get $n)))
    (global.set $pos (i32.const 65536)))

  ;; --- scanning --------------------------------------------------------------------------
  (func $peek (result i32)  ;; the byte at pos, or -1 at the end
    (if (result i32) (i32.ge_u (global.get $pos) (global.get $end))
      (then (i32.const -1))
      (else (i32.load8_u (global.get $pos)))))

  (func $advance (param $n i32)
    (global.set $pos (i32.add (global.get $pos) (local.get $n))))

  (func $skip_ws
    (local $c i32)
    (block $done
      (loop $next
        (local.set $c (call $peek))
        (br_if $done (i32.eqz (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
                                      (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13))))))
        (call $advance (i32.const 1))
        (br $next))))

  (func $expect (param $c i32)
    (if (i32.ne (call $peek) (local.get $c))
      (then (call $fail (i32.const 1400) (i32.const 2))))
    (call $advance (i32.const 1)))

  ;; pos at an opening quote; leaves pos after the closing one
  (func $skip_string
    (local $c i32)
    (call $expect (i32.const 34))
    (block $done
      (loop $next
        (local.set $c (call $peek))
        (if (i32.eq (local.get $c) (i32.const -1)) (then (call $fail (i32.const 1400) (i32.const 2))))
        (if (i32.eq (local.get $c) (i32.const 92)) (then (call $advance (i32.const 2)) (br $next)))
        (call $advance (i32.const 1))
        (br_if $done (i32.eq (local.get $c) (i32.const 34)))
        (br $next))))

  ;; any JSON value: a string, an object or array (nested), or a number/true/false/null
  (func $skip_value
    (local $c i32) (local $depth i32)
    (local.set $c (call $peek))
    (if (i32.eq (local.get $c) (i32.const 34)) (then (call $skip_string) (return)))
    (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
      (then
        (loop $next
          (local.set $c (call $peek))
          (if (i32.eq (local.get $c) (i32.const -1)) (then (call $fail (i32.const 1400) (i32.const 2))))
          (if (i32.eq (local.get $c) (i32.const 34)) (then (call $skip_string) (br $next)))
          (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
            (then (local.set $depth (i32.add (local.get $depth) (i32.const 1)))))
          (if (i32.or (i32.eq (local.get $c) (i32.const 125)) (i32.eq (local.get $c) (i32.const 93)))
            (then (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))))
          (call $advance (i32.const 1))
          (br_if $next (local.get $depth)))
        (return)))
    (block $done
      (loop $next
        (local.set $c (call $peek))
        (br_if $done (i32.or (i32.or (i32.eq (local.get $c) (i32.const -1)) (i32.eq (local.get $c) (i32.const 44)))
                             (i32.or (i32.eq (local.get $c) (i32.const 125)) (i32.eq (local.get $c) (i32.const 93)))))
        (br_if $done (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
                             (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13)))))
        (call $advance (i32.const 1))
        (br $next))))

  ;; --- counting --------------------------------------------------------------------------
  (func $is_ws (param $c i32) (result i32)
    (i32.or (i32.eq (local.get $c) (i32.const 32))
            (i32.and (i32.ge_u (local.get $c) (i32.const 9)) (i32.le_u (local.get $c) (i32.const 13)))))

  ;; one character (code point $cp, $size bytes in UTF-8)
  (func $count_char (param $cp i32) (param $size i32)
    (global.set $bytes (i32.add (global.get $bytes) (local.get $size)))
    (global.set $chars (i32.add (global.get $chars) (i32.const 1)))
    (if (call $is_ws (local.get $cp))
      (then (global.set $in_word (i32.const 0)))
      (else
        (if (i32.eqz (global.get $in_word))
          (then (global.set $words (i32.add (global.get $words) (i32.const 1)))
                (global.set $in_word (i32.const 1))))))
    (if (i32.eq (local.get $cp) (i32.const 10))
      (then (global.set $lines (i32.add (global.get $lines) (i32.const 1)))))
    (global.set $last (local.get $cp)))

  (func $utf8_size (param $cp i32) (result i32)
    (if (i32.lt_u (local.get $cp) (i32.const 0x80)) (then (return (i32.const 1))))
    (if (i32.lt_u (local.get $cp) (i32.const 0x800)) (then (return (i32.const 2))))
    (if (i32.lt_u (local.get $cp) (i32.const 0x10000)) (then (return (i32.const 3))))
    (i32.const 4))

  (func $hex_digit (param $c i32) (result i32)
    (if (i32.and (i32.ge_u (local.get $c) (i32.const 48)) (i32.le_u (local.get $c) (i32.const 57)))
      (then (return (i32.sub (local.get $c) (i32.const 48)))))
    (local.set $c (i32.or (local.get $c) (i32.const 32)))  ;; lower case
    (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 102)))
      (then (return (i32.sub (local.get $c) (i32.const 87)))))
    (call $fail (i32.const 1400) (i32.const 2))
    unreachable)

  ;; four hex digits at pos (bounds-checked), advancing past them
  (func $hex4 (result i32)
    (local $v i32) (local $i i32)
    (if (i32.gt_u (i32.add (global.get $pos) (i32.const 4)) (global.get $end))
      (then (call $fail (i32.const 1400) (i32.const 2))))
    (loop $next
      (local.set $v (i32.or (i32.shl (local.get $v) (i32.const 4))
                            (call $hex_digit (i32.load8_u (i32.add (global.get $pos) (local.get $i))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 4))))
    (call $advance (i32.const 4))
    (local.get $v))

  ;; after a backslash: the escaped code point
  (func $escape (result i32)
    (local $c i32) (local $cp i32) (local $low i32)
    (local.set $c (call $peek))
    (call $advance (i32.const 1))
    (if (i32.eq (local.get $c) (i32.const 110)) (then (return (i32.const 10))))  ;; \n
    (if (i32.eq (local.get $c) (i32.const 116)) (then (return (i32.const 9))))   ;; \t
    (if (i32.eq (local.get $c) (i32.const 114)) (then (return (i32.const 13))))  ;; \r
    (if (i32.eq (local.get $c) (i32.const 98)) (then (return (i32.const 8))))    ;; \b
    (if (i32.eq (local.get $c) (i32.const 102)) (then (return (i32.const 12))))  ;; \f
    (if (i32.or (i32.or (i32.eq (local.get $c) (i32.const 34)) (i32.eq (local.get $c) (i32.const 92)))
                (i32.eq (local.get $c) (i32.const 47)))
      (then (return (local.get $c))))                                          ;; \" \\ \/
    (if (i32.ne (local.get $c) (i32.const 117)) (then (call $fail (i32.const 1400) (i32.const 2))))
    (local.set $cp (call $hex4))
    ;; a high surrogate followed by \u and a low surrogate is one code point
    (if (i32.and (i32.and (i32.ge_u (local.get $cp) (i32.const 0xD800)) (i32.le_u (local.get $cp) (i32.const 0xDBFF)))
                 (i32.le_u (i32.add (global.get $pos) (i32.const 6)) (global.get $end)))
      (then
        (if (i32.and (i32.eq (i32.load8_u (global.get $pos)) (i32.const 92))
                     (i32.eq (i32.load8_u (i32.add (global.get $pos) (i32.const 1))) (i32.const 117)))
          (then
            (call $advance (i32.const 2))
            (local.set $low (call $hex4))
            (if (i32.and (i32.ge_u (local.get $low) (i32.const 0xDC00)) (i32.le_u (local.get $low) (i32.const 0xDFFF)))
              (then
                (return (i32.add (i32.const 0x10000)
                                 (i32.or (i32.shl (i32.sub (local.get $cp) (i32.const 0xD800)) (i32.const 10))
                                         (i32.sub (local.get $low) (i32.const 0xDC00)))))))
            ;; not a pair: count the lone high surrogate, then come back for the second escape
            (call $advance (i32.const -6))))))
    (local.get $cp))

  ;; pos at the opening quote of the text: count it
  (func $count_string
    (local $c i32) (local $cp i32)
    (call $expect (i32.const 34))
    (block $done
      (loop $next
        (local.set $c (call $peek))
        (if (i32.eq (local.get $c) (i32.const -1)) (then (call $fail (i32.const 1400) (i32.const 2))))
        (br_if $done (i32.eq (local.get $c) (i32.const 34)))
        (call $advance (i32.const 1))
        (if (i32.eq (local.get $c) (i32.const 92))
          (then
            (local.set $cp (call $escape))
            (call $count_char (local.get $cp) (call $utf8_size (local.get $cp))))
          (else
            ;; raw UTF-8: a byte that is not a continuation byte starts a character
            (if (i32.eq (i32.and (local.get $c) (i32.const 0xC0)) (i32.const 0x80))
              (then (global.set $bytes (i32.add (global.get $bytes) (i32.const 1))))
              (else (call $count_char (local.get $c) (i32.const 1))))))
        (br $next)))
    (if (i32.and (i32.gt_u (global.get $chars) (i32.const 0)) (i32.ne (global.get $last) (i32.const 10)))
      (then (global.set $lines (i32.add (global.get $lines) (i32.const 1))))))

  ;; --- output ----------------------------------------------------------------------------
  (func $emit_z (param $p i32)
    (local $n i32)
    (local.set $n (call $strlen (local.get $p)))
    (memory.copy (global.get $out) (local.get $p) (local.get $n))
    (global.set $out (i32.add (global.get $out) (local.get $n))))

  (func $emit_u32 (param $v i32)
    (local $tmp i32) (local $n i32)
    ;; digits backwards into 40..52, then copied
    (local.set $tmp (i32.const 52))
    (loop $next
      (local.set $tmp (i32.sub (local.get $tmp) (i32.const 1)))
      (i32.store8 (local.get $tmp) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $next (local.get $v)))
    (local.set $n (i32.sub (i32.const 52) (local.get $tmp)))
    (memory.copy (global.get $out) (local.get $tmp) (local.get $n))
    (global.set $out (i32.add (global.get $out) (local.get $n))))

  (func (export "_start")
    (local $key_start i32) (local $is_text i32)
    (call $read_all)
    (call $skip_ws)
    (if (i32.ne (call $peek) (i32.const 123)) (then (call $fail (i32.const 1100) (i32.const 2))))
    (call $advance (i32.const 1))
    (block $found
      (loop $member
        (call $skip_ws)
        (if (i32.eq (call $peek) (i32.const 125)) (then (call $fail (i32.const 1200) (i32.const 2))))
        ;; the key: is it exactly "text"?
        (local.set $key_start (i32.add (global.get $pos) (i32.const 1)))
        (call $skip_string)
        (local.set $is_text
          (i32.and (i32.eq (i32.sub (global.get $pos) (local.get $key_start)) (i32.const 5))
                   (i32.eq (i32.load (local.get $key_start)) (i32.const 0x74786574))))  ;; "text" little-endian
        (call $skip_ws)
        (call $expect (i32.const 58))
        (call $skip_ws)
        (br_if $found (local.get $is_text))
        (call $skip_value)
        (call $skip_ws)
        (if (i32.eq (call $peek) (i32.const 44)) (then (call $advance (i32.const 1)) (br $member)))
        (if (i32.eq (call $peek) (i32.const 125)) (then (call $fail (i32.const 1200) (i32.const 2))))
        (call $fail (i32.const 1400) (i32.const 2))))
    (if (i32.ne (call $peek) (i32.const 34)) (then (call $fail (i32.const 1300) (i32.const 2))))
    (call $count_string)
    (call $emit_z (i32.const 1024)) (call $emit_u32 (global.get $bytes))
    (call $emit_z (i32.const 1040)) (call $emit_u32 (global.get $chars))
    (call $emit_z (i32.const 1056)) (call $emit_u32 (global.get $words))
    (call $emit_z (i32.const 1072)) (call $emit_u32 (global.get $lines))
    (call $emit_z (i32.const 1088))
    (call $write (i32.const 1) (i32.const 64) (i32.sub (global.get $out) (i32.const 64)))))
