/* The image's entry: the multiboot header, the 32-bit stub that enters long mode, and the
 * exception entry points. AT&T syntax, assembled by rustc's integrated assembler (src/boot.rs).
 *
 * Sources: Multiboot Specification 0.6.96 (header, section 3.1; machine state at entry, 3.2);
 * Intel SDM Vol. 3A, section 10.8.5 (initialising IA-32e mode), 4.5 (4-level paging, 2 MiB pages:
 * Table 4-17), 2.5 (CR0, CR4), 3.4.5 (segment descriptors), 6.14 (64-bit mode exception handling). */

/* ---- Multiboot header (Multiboot 0.6.96, 3.1.1-3.1.3) ------------------------------------------
 * Flag bit 16 (the "a.out kludge"): the loader takes the load addresses from the header instead
 * of parsing the executable, which is how an ELF64 image is loaded by a multiboot-1 loader. */
    .section .boot.header, "a"
    .balign 4
multiboot_header:
    .long 0x1BADB002                    /* magic */
    .long 0x00010000                    /* flags: load addresses below are valid */
    .long -(0x1BADB002 + 0x00010000)    /* checksum: the three fields add up to 0 */
    .long multiboot_header              /* header_addr */
    .long __image_start                 /* load_addr: the image's first byte */
    .long __data_end                    /* load_end_addr: end of .data */
    .long __bss_end                     /* bss_end_addr: the loader zeroes up to here */
    .long _start32                      /* entry_addr */

/* ---- 32-bit entry ------------------------------------------------------------------------------
 * State (Multiboot 3.2): protected mode, paging off, interrupts off, flat 4 GiB segments,
 * EAX = 0x2BADB002, EBX = physical address of the multiboot information. No stack. */
    .section .boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    movl %eax, %ebp                     /* rust_main's first argument: the loader's magic */
    movl %ebx, %esi                     /* second: the multiboot information's address */

    /* Long mode present? (CPUID 0x80000001: EDX bit 29, SDM Vol. 2A, CPUID) */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb no_long_mode
    movl $0x80000001, %eax
    cpuid
    btl $29, %edx
    jnc no_long_mode

    /* Zero .bss (a multiboot loader already did; PVH or other loaders may not): it holds the page
     * tables and the stack. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb
    movl $__stack_top, %esp

    /* Identity map of the first 4 GiB with 2 MiB pages: PML4[0] -> PDPT, PDPT[0..4] -> four page
     * directories of 512 entries each (SDM Vol. 3A, 4.5.4, Tables 4-14, 4-15, 4-17). */
    movl $boot_pdpt, %eax
    orl $0x3, %eax                      /* present, writable */
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $0x3, %eax
    xorl %ecx, %ecx
1:  movl %eax, boot_pdpt(,%ecx,8)
    addl $4096, %eax
    incl %ecx
    cmpl $4, %ecx
    jb 1b
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax                     /* present, writable, PS (a 2 MiB page) */
    cmpl $1536, %ecx
    jb 3f
    orl $0x18, %eax                     /* 3 GiB and up, where PCI BARs live: PWT|PCD (uncached) */
3:  movl %eax, boot_pd(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jb 2b

    /* A guard page below the stack, left unmapped so that an overflow faults (src/idt.rs reports
     * it on its own stack) instead of overwriting what lies below: the 2 MiB page holding it is
     * mapped with a page table of 4 KiB pages instead (SDM Vol. 3A, Table 4-19), all but one. */
    movl $stack_guard, %edx
    andl $0xFFE00000, %edx              /* base of the 2 MiB region */
    movl %edx, %eax
    orl $0x3, %eax                      /* present, writable */
    xorl %ecx, %ecx
8:  movl %eax, boot_pt(,%ecx,8)
    addl $4096, %eax
    incl %ecx
    cmpl $512, %ecx
    jb 8b
    movl $stack_guard, %ecx
    shrl $12, %ecx
    andl $511, %ecx
    movl $0, boot_pt(,%ecx,8)           /* the guard page: not present */
    shrl $21, %edx                      /* page directory entry of the region */
    movl $boot_pt, %eax
    orl $0x3, %eax
    movl %eax, boot_pd(,%edx,8)

    /* Enter IA-32e mode (SDM Vol. 3A, 10.8.5): CR3, CR4.PAE, EFER.LME, then CR0.PG. CR4.OSFXSR and
     * OSXMMEXCPT enable SSE, which code built for x86_64-unknown-linux-gnu uses freely (floating
     * point, vectorised copies); CR0.EM and TS clear, MP and NE set (SDM Vol. 3A, 14.1.3). */
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x620, %eax                    /* PAE (bit 5), OSFXSR (9), OSXMMEXCPT (10) */
    movl %eax, %cr4
    movl $0xC0000080, %ecx              /* IA32_EFER */
    rdmsr
    orl $0x100, %eax                    /* LME (bit 8) */
    wrmsr
    movl %cr0, %eax
    andl $0xFFFFFFF3, %eax              /* clear EM (bit 2), TS (bit 3) */
    orl $0x80000023, %eax               /* PG (31), NE (5), MP (1), PE (0) */
    movl %eax, %cr0
    lgdt boot_gdtr
    ljmpl $0x08, $long_mode

/* No long mode: say so on COM1 and exit QEMU with the failure code (0x11, see src/exit.rs). */
no_long_mode:
    movl $no_long_mode_msg, %esi
4:  movb (%esi), %al
    testb %al, %al
    jz 5f
    movw $0x3F8, %dx
    outb %al, %dx
    incl %esi
    jmp 4b
5:  movw $0xF4, %dx
    movl $0x11, %eax
    outl %eax, %dx
6:  hlt
    jmp 6b

/* ---- 64-bit entry ------------------------------------------------------------------------------ */
    .code64
long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq $__stack_top, %rsp             /* 16-byte aligned: the call below keeps the SysV ABI */
    fninit
    movl %ebp, %edi                     /* writing a 32-bit register clears the upper half, */
    movl %esi, %esi                     /* which mode switches leave undefined */
    call rust_main
7:  cli
    hlt
    jmp 7b

/* GDT (SDM Vol. 3A, 3.4.5 and 5.2.1): null, 64-bit code (L=1, D=0) at 0x08, data at 0x10, and
 * room at 0x18 for the 16-byte TSS descriptor that src/idt.rs fills in. */
    .balign 16
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0
    .quad 0
boot_gdt_end:
boot_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

no_long_mode_msg:
    .asciz "erpc-appliance: this CPU has no 64-bit mode (CPUID 0x80000001 EDX bit 29)\r\n"

/* ---- Exception entry points (SDM Vol. 3A, 6.14) ------------------------------------------------
 * One stub per vector 0-31. The CPU pushes SS, RSP, RFLAGS, CS, RIP and, for some vectors, an
 * error code (SDM Vol. 3A, Table 6-1); the stubs push a 0 where it does not, then the vector, so
 * that appliance_exception (src/idt.rs) always sees the same frame. It never returns. */
    .section .text.exceptions, "ax"
    .irp n, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
exc_stub_\n:
    pushq $0
    pushq $\n
    jmp exc_common
    .endr
    .irp n, 8,10,11,12,13,14,17,21,29,30
exc_stub_\n:
    pushq $\n
    jmp exc_common
    .endr
exc_common:
    movq %rsp, %rdi
    andq $-16, %rsp
    call appliance_exception
    ud2

    .section .rodata.exceptions, "a"
    .balign 8
    .global exception_stubs
exception_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc_stub_\n
    .endr

/* ---- Page tables and the stack, in .bss --------------------------------------------------------- */
    .section .bss.boot, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
boot_pt:
    .skip 4096
    .global stack_guard
stack_guard:                            /* unmapped (see above) */
    .skip 4096
    .global __stack_bottom
    .global __stack_top
__stack_bottom:
    .skip 0x200000                      /* 2 MiB: a release build uses about 0.2, a dev build 1 (src/boot.rs reports the high-water mark) */
__stack_top:
    .global exception_stack_top
    .balign 16
    .skip 0x4000                        /* 16 KiB for the exception handler (IST 1, src/idt.rs) */
exception_stack_top:

    .text
    .code64
